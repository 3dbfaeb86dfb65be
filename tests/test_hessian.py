"""`Hessian` against analytic Hessians, nested-jacobian references and finite differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhess_linop as thl
from conftest import (
    XOR_X,
    XOR_Y,
    dense_reference,
    gradient_reference,
    mlp,
    mse_mean,
    xor_model,
)

MODES = ["auto", "reverse-over-reverse", "forward-over-reverse"]


def cubic_hessian(x, y):
    return np.array([[12 * x * y**3, 18 * x**2 * y**2], [18 * x**2 * y**2, 12 * x**3 * y]])


# ------------------------------------------------------------- analytic loss


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("point", [(1.0, 1.0), (0.5, -2.0), (1.5, 0.25)])
def test_cubic_matches_analytic(mode, point):
    w = tf.Variable(point, dtype=tf.float64)
    H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w, mode=mode)
    x, y = point
    expected = cubic_hessian(x, y)
    np.testing.assert_allclose(H.dense(), expected, rtol=1e-14)
    np.testing.assert_allclose(H.gradient(), [6 * x**2 * y**3, 6 * x**3 * y**2], rtol=1e-14)
    assert H.loss_value() == pytest.approx(2 * x**3 * y**3, rel=1e-14)
    v = np.array([0.3, -1.2])
    np.testing.assert_allclose(H.hvp(v), expected @ v, rtol=1e-13)
    grad, hv = H.action(v)
    np.testing.assert_allclose(grad, [6 * x**2 * y**3, 6 * x**3 * y**2], rtol=1e-14)
    np.testing.assert_allclose(hv, expected @ v, rtol=1e-13)
    V = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    np.testing.assert_allclose(H.hvp(V), expected @ V, rtol=1e-13)


def test_cubic_eigenvalues_through_scipy_eigsh():
    from scipy.sparse.linalg import eigsh

    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    A = thl.as_linop(thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w))
    top = eigsh(A, k=1, which="LA", return_eigenvectors=False)
    bottom = eigsh(A, k=1, which="SA", return_eigenvectors=False)
    np.testing.assert_allclose([top[0], bottom[0]], [30.0, -6.0], rtol=1e-12)


def test_loss_without_argument_and_several_variables():
    a = tf.Variable([1.0, 2.0], dtype=tf.float64)
    b = tf.Variable([[0.5]], dtype=tf.float64)

    def loss():
        return tf.reduce_sum(a**2) * b[0, 0] ** 3 + a[0] * a[1] * b[0, 0]

    H = thl.Hessian(loss, [a, b])
    assert H.n == 3
    np.testing.assert_allclose(H.dense(), dense_reference(loss, [a, b]), rtol=1e-13)


def test_variable_the_loss_ignores_gives_zero_rows_and_columns():
    a = tf.Variable([1.0, 2.0], dtype=tf.float64)
    unused = tf.Variable([3.0, 4.0, 5.0], dtype=tf.float64)
    H = thl.Hessian(lambda v: v[0][0] ** 2 * v[0][1], [a, unused])
    dense = H.dense()
    np.testing.assert_array_equal(dense[2:, :], 0.0)
    np.testing.assert_array_equal(dense[:, 2:], 0.0)
    np.testing.assert_allclose(dense[:2, :2], [[4.0, 2.0], [2.0, 0.0]])
    np.testing.assert_array_equal(H.gradient()[2:], 0.0)


def test_mixed_dtype_variables():
    a = tf.Variable([1.0, 2.0], dtype=tf.float64)
    b = tf.Variable([0.5], dtype=tf.float32)

    def loss():
        return tf.reduce_sum(a**3) * tf.cast(b[0], tf.float64) ** 2

    H = thl.Hessian(loss, [a, b])
    reference = dense_reference(loss, [a, b])
    np.testing.assert_allclose(H.dense(), reference, rtol=1e-6)
    np.testing.assert_allclose(H.hvp(np.ones((3, 2))), reference @ np.ones((3, 2)), rtol=1e-6)


# ----------------------------------------------------------------- Keras


@pytest.mark.parametrize("mode", MODES)
def test_keras_mlp_matches_nested_jacobian(mode, rng):
    model = mlp(sizes=(3, 5, 2))
    x = rng.standard_normal((12, 3))
    y = rng.standard_normal((12, 2))
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=5, mode=mode)
    reference = dense_reference(mse_mean(model, x, y), model.trainable_variables)
    assert H.n == reference.shape[0] == 3 * 5 + 5 + 5 * 2 + 2
    np.testing.assert_allclose(H.dense(), reference, rtol=1e-10, atol=1e-12)
    V = rng.standard_normal((H.n, 4))
    np.testing.assert_allclose(H.hvp(V), reference @ V, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H.hvp(V[:, 0]), reference @ V[:, 0], rtol=1e-10, atol=1e-12)
    value, grad = gradient_reference(mse_mean(model, x, y), model.trainable_variables)
    assert H.loss_value() == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(H.gradient(), grad, rtol=1e-11, atol=1e-14)


def test_keras_conv2d_matches_nested_jacobian(rng):
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1), dtype="float64"),
            keras.layers.Conv2D(2, 3, activation="tanh", dtype="float64"),
            keras.layers.MaxPooling2D(2, dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    x = rng.standard_normal((7, 6, 6, 1))
    labels = rng.integers(0, 3, size=7)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    H = thl.Hessian.from_keras(model, loss, x, labels, batch_size=3)

    def reference_loss():
        logits = model(tf.constant(x))
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )

    reference = dense_reference(reference_loss, model.trainable_variables)
    np.testing.assert_allclose(H.dense(), reference, rtol=1e-9, atol=1e-12)


def test_finite_differences_of_the_gradient(rng):
    model = mlp(sizes=(4, 6, 3), activation="sigmoid", seed=2)
    x = rng.standard_normal((15, 4))
    y = rng.standard_normal((15, 3))
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=4)
    v = rng.standard_normal(H.n)
    v /= np.linalg.norm(v)
    w0 = [var.numpy() for var in model.trainable_variables]
    step = 1e-5

    def gradient_at(t):
        for var, base, dv in zip(model.trainable_variables, w0, H.unflatten(v), strict=True):
            var.assign(base + t * dv)
        return H.gradient()

    central = (gradient_at(step) - gradient_at(-step)) / (2 * step)
    gradient_at(0.0)
    hv = H.hvp(v)
    np.testing.assert_allclose(hv, central, rtol=1e-6, atol=1e-9)


def test_batch_size_does_not_change_the_operator(rng):
    model = mlp(sizes=(3, 4, 2), seed=7)
    x = rng.standard_normal((10, 3))
    y = rng.standard_normal((10, 2))
    full = thl.Hessian.from_keras(model, "mse", x, y, batch_size=10)
    uneven = thl.Hessian.from_keras(model, "mse", x, y, batch_size=3)
    single = thl.Hessian.from_keras(model, "mse", x, y, batch_size=1)
    V = rng.standard_normal((full.n, 3))
    for other in (uneven, single):
        np.testing.assert_allclose(other.hvp(V), full.hvp(V), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(other.gradient(), full.gradient(), rtol=1e-13, atol=1e-15)
        assert other.loss_value() == pytest.approx(full.loss_value(), rel=1e-14)


def test_per_sample_and_mean_losses_agree(rng):
    model = mlp(sizes=(3, 4, 2), seed=8)
    x = rng.standard_normal((9, 3))
    y = rng.standard_normal((9, 2))

    def per_sample(t, p):
        return tf.reduce_mean((t - p) ** 2, axis=-1)

    def mean(t, p):
        return tf.reduce_mean((t - p) ** 2)

    def elementwise(t, p):
        return (t - p) ** 2

    hessians = [
        thl.Hessian.from_keras(model, loss, x, y, batch_size=4)
        for loss in ("mse", keras.losses.MeanSquaredError(), per_sample, mean, elementwise)
    ]
    V = rng.standard_normal((hessians[0].n, 2))
    for H in hessians[1:]:
        np.testing.assert_allclose(H.hvp(V), hessians[0].hvp(V), rtol=1e-13, atol=1e-15)
        assert H.loss_value() == pytest.approx(hessians[0].loss_value(), rel=1e-13)


def test_float32_model_gives_float64_operator_close_to_float64_model(rng):
    model64 = mlp(dtype="float64", sizes=(3, 5, 2), seed=4)
    model32 = mlp(dtype="float32", sizes=(3, 5, 2), seed=4)
    for v32, v64 in zip(model32.trainable_variables, model64.trainable_variables, strict=True):
        v32.assign(v64.numpy().astype(np.float32))
    x = rng.standard_normal((8, 3))
    y = rng.standard_normal((8, 2))
    H64 = thl.Hessian.from_keras(model64, "mse", x, y)
    H32 = thl.Hessian.from_keras(model32, "mse", x.astype(np.float32), y.astype(np.float32))
    v = rng.standard_normal(H64.n)
    out = H32.hvp(v)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, H64.hvp(v), rtol=2e-5, atol=2e-5 * np.abs(out).max())


def test_xor_network_eigenvalues_match_numpy():
    from scipy.sparse.linalg import eigsh

    model = xor_model()
    H = thl.Hessian.from_keras(model, "mse", XOR_X, XOR_Y)
    assert H.n == 9
    reference = dense_reference(mse_mean(model, XOR_X, XOR_Y), model.trainable_variables)
    expected = np.linalg.eigvalsh(reference)
    A = thl.as_linop(H)
    top = eigsh(A, k=2, which="LA", return_eigenvectors=False)
    bottom = eigsh(A, k=1, which="SA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(top), expected[-2:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bottom, expected[:1], rtol=1e-8, atol=1e-10)


# --------------------------------------------------------- compiled once


def test_each_function_is_traced_once(rng):
    model = mlp(sizes=(3, 4, 2), seed=9)
    x = rng.standard_normal((10, 3))
    y = rng.standard_normal((10, 2))
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=4)  # batches of 4, 4, 2
    H.keep_passes = False  # the functions of products from scratch
    A = thl.as_linop(H)
    for _ in range(3):
        H.loss_value()
        H.gradient()
        H.action(rng.standard_normal(H.n))
        A.matvec(rng.standard_normal(H.n))
        for k in (2, 3, 5):
            A.matmat(rng.standard_normal((H.n, k)))
    H.dense(block_size=4)
    counts = [f.experimental_get_tracing_count() for f in H._engine.functions]
    assert counts == [1, 1, 1, 1, 1]


# -------------------------------------------------------------- dense


def test_dense_is_symmetric_and_independent_of_block_size(rng):
    model = mlp(sizes=(3, 4, 2), seed=10)
    x = rng.standard_normal((6, 3))
    y = rng.standard_normal((6, 2))
    H = thl.Hessian.from_keras(model, "mse", x, y)
    full = H.dense()
    np.testing.assert_array_equal(full, full.T)
    for block in (1, 7, H.n, 1000):
        np.testing.assert_allclose(H.dense(block_size=block), full, rtol=1e-13, atol=1e-15)


def test_wide_blocks_are_split_into_calls_of_max_columns(rng):
    model = mlp(sizes=(3, 4, 2), seed=14)
    x = rng.standard_normal((6, 3))
    y = rng.standard_normal((6, 2))
    H = thl.Hessian.from_keras(model, "mse", x, y)
    reference = dense_reference(mse_mean(model, x, y), model.trainable_variables)
    H.max_columns = 2
    V = rng.standard_normal((H.n, 5))
    np.testing.assert_allclose(H.hvp(V), reference @ V, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(H.dense(), reference, rtol=1e-10, atol=1e-13)
    assert H.hvp(np.zeros((H.n, 0))).shape == (H.n, 0)


def test_dense_progress_bar(capsys):
    w = tf.Variable(np.ones(5))
    H = thl.Hessian(lambda w: tf.reduce_sum(w**4), w)
    np.testing.assert_allclose(H.dense(block_size=2, progress=True), 12 * np.eye(5))
    assert "dense Hessian" in capsys.readouterr().err


# -------------------------------------------------------- model safety


def test_model_state_is_unchanged_by_operator_calls(rng):
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="float64"),
            keras.layers.Dense(4, dtype="float64"),
            keras.layers.BatchNormalization(dtype="float64"),
            keras.layers.Activation("tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = rng.standard_normal((8, 3))
    y = rng.standard_normal((8, 1))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    before = [v.numpy().copy() for v in model.variables]
    optimizer_before = [v.numpy().copy() for v in model.optimizer.variables]
    for training in (False, True):
        # BatchNorm in training mode makes the objective depend on the batching.
        H = thl.Hessian.from_keras(
            model, "mse", x, y, batch_size=3, training=training, allow_batch_dependence=training
        )
        A = thl.as_linop(H)
        H.loss_value()
        H.gradient()
        H.action(rng.standard_normal(H.n))
        A.matvec(rng.standard_normal(H.n))
        A.matmat(rng.standard_normal((H.n, 3)))
        H.dense()
        for b, v in zip(before, model.variables, strict=True):
            np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    for b, v in zip(optimizer_before, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(v.numpy(), b)


def test_training_mode_batchnorm_uses_batch_statistics(rng):
    keras.utils.set_random_seed(12)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="float64"),
            keras.layers.Dense(4, dtype="float64"),
            keras.layers.BatchNormalization(dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    x = rng.standard_normal((6, 3))
    y = rng.standard_normal((6, 1))
    H = thl.Hessian.from_keras(model, "mse", x, y, training=True)

    def loss():
        return tf.reduce_mean((model(tf.constant(x), training=True) - y) ** 2)

    # Nested tapes through tf.nn.moments drop a second-order term (its
    # stop_gradient on the mean), so the reference is central differences
    # of the eager first-order gradient, which is exact.
    moving = [v.numpy().copy() for v in model.non_trainable_variables]
    w0 = H.parameters()
    step = 1e-5
    columns = []
    for i in range(H.n):
        shifted = []
        for sign in (1, -1):
            H.set_parameters(w0 + sign * step * np.eye(H.n)[i])
            shifted.append(gradient_reference(loss, model.trainable_variables)[1])
        columns.append((shifted[0] - shifted[1]) / (2 * step))
    H.set_parameters(w0)
    for v, m in zip(model.non_trainable_variables, moving, strict=True):
        v.assign(m)
    reference = np.column_stack(columns)
    np.testing.assert_allclose(H.dense(), reference, rtol=1e-6, atol=1e-8)


def test_check_deterministic_refuses_dropout_in_training_mode(rng):
    keras.utils.set_random_seed(13)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="float64"),
            keras.layers.Dense(8, activation="tanh", dtype="float64"),
            keras.layers.Dropout(0.5, dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    x = rng.standard_normal((16, 3))
    y = rng.standard_normal((16, 1))
    with pytest.raises(ValueError, match=r"not deterministic.*training=False"):
        thl.Hessian.from_keras(model, "mse", x, y, training=True, check_deterministic=True)
    H = thl.Hessian.from_keras(model, "mse", x, y, check_deterministic=True)
    assert H.n == 3 * 8 + 8 + 8 + 1


def test_check_deterministic_refuses_random_ops_in_a_plain_loss():
    w = tf.Variable([1.0, 2.0], dtype=tf.float64)
    with pytest.raises(ValueError, match="not deterministic"):
        thl.Hessian(
            lambda w: tf.reduce_sum(w**3 * tf.random.normal([2], dtype=tf.float64)),
            w,
            check_deterministic=True,
        )


# ------------------------------------------------------------ bad input


@pytest.fixture
def small_hessian():
    w = tf.Variable([1.0, 2.0, 3.0], dtype=tf.float64)
    return thl.Hessian(lambda w: tf.reduce_sum(w**3), w)


@pytest.mark.parametrize(
    ("v", "error", "match"),
    [
        (np.ones(4), ValueError, r"`v` must have shape \(3,\) or \(3, k\); got \(4,\)"),
        (np.ones((3, 2, 2)), ValueError, r"got \(3, 2, 2\)"),
        (np.ones((2, 3)), ValueError, r"got \(2, 3\)"),
        (np.array([1.0, np.nan, 0.0]), ValueError, "non-finite"),
        (np.array([1.0, np.inf, 0.0]), ValueError, "non-finite"),
        (np.array(["a", "b", "c"]), TypeError, "real array"),
    ],
)
def test_bad_vectors_are_rejected(small_hessian, v, error, match):
    with pytest.raises(error, match=match):
        small_hessian.hvp(v)


def test_action_takes_one_vector(small_hessian):
    with pytest.raises(ValueError, match=r"`v` must have shape \(3,\); got \(3, 2\)"):
        small_hessian.action(np.ones((3, 2)))


def test_operator_rejects_wrong_shape(small_hessian):
    with pytest.raises(ValueError):
        thl.as_linop(small_hessian).matvec(np.ones(5))


def test_non_scalar_loss_is_rejected():
    w = tf.Variable([1.0, 2.0], dtype=tf.float64)
    H = thl.Hessian(lambda w: w**2, w)
    with pytest.raises(ValueError, match=r"scalar tensor; got shape \(2,\)"):
        H.hvp(np.ones(2))


def test_loss_returning_none_is_rejected():
    w = tf.Variable([1.0, 2.0], dtype=tf.float64)
    H = thl.Hessian(lambda w: None, w)
    with pytest.raises(TypeError, match="returned None"):
        H.gradient()


def test_integer_variables_are_rejected():
    w = tf.Variable([1, 2], dtype=tf.int32)
    with pytest.raises(TypeError, match=r"`variables\[0\]`.*int32.*floating-point"):
        thl.Hessian(lambda w: tf.reduce_sum(w), w)


def test_empty_variable_list_is_rejected():
    with pytest.raises(ValueError, match="at least one variable"):
        thl.Hessian(lambda: tf.constant(0.0), [])


def test_non_variables_are_rejected():
    with pytest.raises(TypeError, match=r"`variables\[1\]` must be a tf.Variable"):
        thl.Hessian(lambda w: 0.0, [tf.Variable(1.0), tf.constant(2.0)])
    with pytest.raises(TypeError, match="`variables` must be"):
        thl.Hessian(lambda w: 0.0, 3.0)
    with pytest.raises(TypeError, match="`loss` must be callable"):
        thl.Hessian("mse", tf.Variable(1.0))


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="`mode` must be one of"):
        thl.Hessian(lambda w: w**2, tf.Variable(1.0), mode="forward")


def test_bad_keras_data_is_rejected(rng):
    model = mlp(sizes=(3, 2, 1))
    x = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="same number of samples; got 10 and 9"):
        thl.Hessian.from_keras(model, "mse", x, np.ones((9, 1)))
    for bad in (0, -2):
        with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
            thl.Hessian.from_keras(model, "mse", x, np.ones((10, 1)), batch_size=bad)
    with pytest.raises(TypeError, match="`batch_size` must be a positive integer"):
        thl.Hessian.from_keras(model, "mse", x, np.ones((10, 1)), batch_size=2.5)
    with pytest.raises(ValueError, match="not a Keras loss name"):
        thl.Hessian.from_keras(model, "no_such_loss", x, np.ones((10, 1)))
    with pytest.raises(TypeError, match="`loss` must be a Keras loss name"):
        thl.Hessian.from_keras(model, 3, x, np.ones((10, 1)))
    with pytest.raises(ValueError, match="no samples"):
        thl.Hessian.from_keras(model, "mse", x[:0], np.ones((0, 1)))
    with pytest.raises(TypeError, match="`comm` must be an mpi4py communicator"):
        thl.Hessian.from_keras(model, "mse", x, np.ones((10, 1)), comm="world")


def test_unbuilt_model_is_rejected():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="must be built"):
        thl.Hessian.from_keras(model, "mse", np.ones((3, 2)), np.ones((3, 2)))


# --------------------------------------------------------------- layout


def test_flatten_and_unflatten_follow_variable_order(small_hessian):
    a = tf.Variable(np.zeros((2, 3)))
    b = tf.Variable(np.zeros(4))
    H = thl.Hessian(lambda v: tf.reduce_sum(v[0]) + tf.reduce_sum(v[1]), [a, b])
    parts = [np.arange(6.0).reshape(2, 3), np.arange(6.0, 10.0)]
    flat = H.flatten(parts)
    np.testing.assert_array_equal(flat, np.arange(10.0))
    for got, want in zip(H.unflatten(flat), parts, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"shape of variable 0, \(2, 3\)"):
        H.flatten([np.zeros(6), np.zeros(4)])
    with pytest.raises(ValueError, match=r"`vec` must have shape \(10,\)"):
        H.unflatten(np.zeros(9))


def test_state_is_restored_after_a_first_call_that_failed(rng):
    keras.utils.set_random_seed(21)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="float64"),
            keras.layers.Dense(4, dtype="float64"),
            keras.layers.BatchNormalization(dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 1))
    H = thl.Hessian.from_keras(model, "mse", x, y, training=True)
    before = [v.numpy().copy() for v in model.non_trainable_variables]

    class Failing:
        def __iter__(self):
            raise RuntimeError("no data this time")

    batches, H._batches = H._batches, Failing()
    with pytest.raises(RuntimeError, match="no data"):
        H.hvp(np.ones(H.n))
    H._batches = batches
    for _ in range(2):
        H.hvp(np.ones(H.n))
        for b, v in zip(before, model.non_trainable_variables, strict=True):
            np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)


@pytest.mark.parametrize("bad", [-1, 0, 2.5, None, True])
def test_bad_max_columns_is_rejected(bad):
    H = thl.Hessian(lambda w: tf.reduce_sum(w**3), tf.Variable([1.0, 2.0], dtype=tf.float64))
    with pytest.raises(ValueError, match="`max_columns` must be a positive integer"):
        H.max_columns = bad
    assert H.max_columns == 64


def test_targets_broadcast_against_the_output_are_rejected(rng):
    model = mlp(sizes=(3, 2, 1))
    with pytest.raises(ValueError, match=r"`y` has shape \(3,\) per sample"):
        thl.Hessian.from_keras(model, "mse", rng.standard_normal((5, 3)), np.ones((5, 3)))
