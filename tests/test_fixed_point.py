"""Products at a fixed point (`Hessian.fixed_point`) against the plain products.

The reference of every check is the same Hessian's product outside the
block, computed from scratch (``keep_passes = False``; itself checked
against nested-tape dense Hessians in test_hessian and
test_keras_objective), or a dense Hessian built here by nested tapes.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhess_linop as thl
from tfhess_linop import _fixed_point


def _hessian(model, x, y, **options):
    """The Hessian of `model` whose products outside a block are computed from scratch."""
    H = thl.Hessian.from_keras(model, x=x, y=y, **options)
    H.keep_passes = False
    return H


def _data(n_samples=24, features=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_samples, features)), rng.integers(0, 3, n_samples)


def _mlp(batch_norm=False):
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input((6,), dtype="float64"),
        keras.layers.Dense(5, activation="tanh", dtype="float64"),
    ]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(dtype="float64"))
    layers.append(keras.layers.Dense(3, dtype="float64"))
    model = keras.Sequential(layers)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _embedding():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(7, 3, dtype="float64"),
            keras.layers.GlobalAveragePooling1D(dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _rnn():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((4, 2), dtype="float64"),
            keras.layers.SimpleRNN(3, dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _case(kind):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 12)
    if kind == "embedding":
        return _embedding(), rng.integers(0, 7, (12, 5)), y, {}
    if kind == "rnn":
        return _rnn(), rng.standard_normal((12, 4, 2)), y, {}
    x, y = _data(12)
    if kind == "batchnorm-train":
        return _mlp(batch_norm=True), x, y, {"training": True, "allow_batch_dependence": True}
    if kind == "batchnorm-infer":
        return _mlp(batch_norm=True), x, y, {}
    return _mlp(), x, y, {}


CASES = [
    ("mlp", None),
    ("mlp", 5),
    ("batchnorm-infer", 5),
    ("batchnorm-train", None),
    ("embedding", 5),
    ("rnn", 5),
]


# The plain blocks of the RNN warn that they loop over columns.
@pytest.mark.filterwarnings("ignore::tfhess_linop.PerformanceWarning")
@pytest.mark.parametrize(("kind", "batch_size"), CASES)
def test_fixed_point_products_equal_plain_products(kind, batch_size):
    model, x, y, options = _case(kind)
    H = _hessian(model, x, y, batch_size=batch_size, **options)
    V = np.random.default_rng(4).standard_normal((H.n, 3))
    plain, plain_one = H.hvp(V), H.hvp(V[:, 0])
    state = [v.numpy().copy() for v in model.variables]
    with H.fixed_point() as point:
        fixed, fixed_one = H.hvp(V), H.hvp(V[:, 0])
    scale = np.abs(plain).max()
    np.testing.assert_allclose(fixed, plain, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(fixed_one, plain_one, rtol=0, atol=1e-13 * scale)
    assert point.active and point.starts == 1
    # Nothing of the model changed: parameters, BatchNorm statistics, seeds.
    for before, variable in zip(state, model.variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)


# Relative tolerance of a product in each dtype: its rounding, summed over
# a few terms.
LOW_PRECISION = {"float32": 1e-6, "float16": 4e-3, "bfloat16": 3e-2}


@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
def test_low_precision_models_get_the_same_products_in_their_own_dtype(dtype):
    # Requests and replies carry rows in the model's dtype (the casts happen
    # in the copies; bfloat16, which NumPy cannot hand over, is cast by
    # TensorFlow): the products equal the plain ones, in both layouts.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,), dtype=dtype),
            keras.layers.Dense(5, activation="tanh", dtype=dtype),
            keras.layers.Dense(3, dtype=dtype),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    H = _hessian(model, x.astype("float32"), y)
    V = np.random.default_rng(7).standard_normal((H.n, 4))
    plain, plain_one = H.hvp(V), H.hvp(V[:, 1])
    with H.fixed_point() as point:
        fixed_c, fixed_f = H.hvp(V), H.hvp(np.asfortranarray(V))
        fixed_one = H.hvp(V[:, 1])
    assert point.active and fixed_c.dtype == np.float64
    tolerance = LOW_PRECISION[dtype] * np.abs(plain).max()
    for fixed in (fixed_c, fixed_f):
        np.testing.assert_allclose(fixed, plain, rtol=0, atol=tolerance)
    np.testing.assert_allclose(fixed_one, plain_one, rtol=0, atol=tolerance)
    np.testing.assert_array_equal(fixed_c, fixed_f)


def test_results_are_the_callers_own_arrays():
    # Requests share one reused buffer and replies are TensorFlow's memory:
    # neither may leak into what the caller holds.
    model = _mlp()
    x, y = _data()
    H = _hessian(model, x, y, batch_size=7)
    rng = np.random.default_rng(5)
    vectors = [rng.standard_normal(H.n) for _ in range(3)]
    block = rng.standard_normal((H.n, 4))
    plain = [H.hvp(v) for v in vectors]
    kept = [v.copy() for v in vectors]
    with H.fixed_point():
        results = [H.hvp(v) for v in vectors]
        block_result = H.hvp(block)
        again = H.hvp(vectors[0])
        # Fortran order, a strided view: any layout is copied in as it is.
        strided = H.hvp(np.asfortranarray(block)[:, ::2])
    for v, k in zip(vectors, kept, strict=True):
        np.testing.assert_array_equal(v, k)
    for result, reference in zip(results, plain, strict=True):
        assert result.flags.writeable
        assert not any(np.shares_memory(result, other) for other in results if other is not result)
        np.testing.assert_allclose(result, reference, rtol=0, atol=1e-13 * np.abs(reference).max())
    np.testing.assert_array_equal(again, results[0])
    np.testing.assert_allclose(block_result[:, ::2], strided, rtol=0, atol=1e-12)
    results[1] += 1.0  # writeable, and changes nothing else
    np.testing.assert_array_equal(again, results[0])


def test_assignments_and_optimizer_steps_invalidate_the_passes():
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y)
    # The reference: a second Hessian of the same model, products outside any block.
    reference = _hessian(model, x, y).dense
    eye = np.eye(H.n)
    optimizer = keras.optimizers.SGD(0.5)
    with H.fixed_point() as point:
        np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
        # set_parameters
        H.set_parameters(H.parameters() + 0.1)
        np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
        assert point.starts == 2
        # an optimizer step, which the Hessian does not see coming
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
        assert point.starts == 3
        # a change of a single entry of one variable
        bias = model.layers[-1].bias
        bias.assign(bias.numpy() + np.array([0.0, 0.0, 1e-3]))
        np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
        assert point.starts == 4


def test_a_change_of_any_variable_the_loss_reads_is_seen():
    # BatchNorm's moving statistics (inference mode) are not parameters,
    # but the Hessian depends on them: a product after they change is made
    # at the new point, as a plain product is.
    model = _mlp(batch_norm=True)
    x, y = _data()
    H = _hessian(model, x, y)
    batch_norm = model.layers[1]
    v = np.random.default_rng(8).standard_normal(H.n)
    with H.fixed_point() as point:
        before = H.hvp(v)
        batch_norm.moving_variance.assign(batch_norm.moving_variance.numpy() * 4.0)
        after = H.hvp(v)
        assert point.starts == 2
    np.testing.assert_allclose(after, H.hvp(v), rtol=0, atol=1e-13 * np.abs(after).max())
    assert np.abs(after - before).max() > 1e-3 * np.abs(before).max()


def test_over_the_memory_budget_the_plain_route_is_taken_and_reported():
    model = _mlp()
    x, y = _data()
    H = _hessian(model, x, y)
    v = np.random.default_rng(5).standard_normal(H.n)
    with (
        pytest.warns(thl.PerformanceWarning, match="over the budget of 0 MiB"),
        H.fixed_point(memory_budget=100) as point,
    ):
        result = H.hvp(v)
    assert point.active is False and point.estimated_bytes > 100
    assert "recomputes the forward and backward passes" in point.reason
    np.testing.assert_allclose(result, H.hvp(v), rtol=0, atol=0)
    with H.fixed_point() as point:
        H.hvp(v)
    assert point.active and 100 < point.estimated_bytes < _fixed_point.default_memory_budget()


def _make_products_uncuttable(monkeypatch):
    """Make every product fail to be cut into its primal and second passes."""
    from tfhess_linop import _split_product

    def fail(*args):
        raise ValueError("an operation the copy cannot take")

    monkeypatch.setattr(_split_product, "_lift", fail)


def test_a_product_that_cannot_be_cut_is_computed_as_outside(monkeypatch):
    _make_products_uncuttable(monkeypatch)
    model = _mlp()
    x, y = _data()
    H = _hessian(model, x, y)
    V = np.random.default_rng(9).standard_normal((H.n, 2))
    with (
        pytest.warns(thl.PerformanceWarning, match="could not be cut.*copy cannot take"),
        H.fixed_point() as point,
    ):
        result = H.hvp(V)
    assert point.active is False and "recomputes" in point.reason
    np.testing.assert_array_equal(result, H.hvp(V))


def test_forward_mode_and_xla_do_not_take_the_fixed_point():
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y, mode="forward-over-reverse")
    with H.fixed_point() as point:
        H.hvp(np.ones(H.n))
    assert point.active is False and "forward-over-reverse" in point.reason


def test_package_algorithms_enter_the_fixed_point(monkeypatch):
    model = _mlp()
    x, y = _data()
    H = _hessian(model, x, y)
    calls = []
    product = _fixed_point.FixedPoint.product

    def counted(self, matrix, out=None):
        calls.append(matrix.shape[1])
        return product(self, matrix, out)

    monkeypatch.setattr(_fixed_point.FixedPoint, "product", counted)
    A = thl.as_linop(H)
    dense = A.toarray()
    assert not calls  # outside any algorithm: plain products
    values = thl.eigsh(A, k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(values), np.linalg.eigvalsh(dense)[-2:], rtol=1e-9)
    assert len(calls) > 2
    calls.clear()
    result = thl.cg(A, np.ones(H.n), rtol=1e-8, maxiter=5)
    assert len(calls) >= 1 and result.x.shape == (H.n,)
    calls.clear()
    thl.NewtonCG(H, max_cg_iter=3).step()
    assert calls


def test_the_primal_passes_run_once_per_point():
    # The loss calls back into Python on its forward pass (a NumPy function
    # outside the differentiated path): each plain product runs it, a fixed
    # point once per point, however many products it makes.
    calls = []

    def scale(x):
        calls.append(1)
        return np.float64(2.0)

    w = tf.Variable([1.0, 1.0], dtype=tf.float64)

    def loss(w):
        factor = tf.numpy_function(scale, [tf.constant(0.0, tf.float64)], tf.float64)
        return tf.reshape(factor, []) * w[0] ** 3 * w[1] ** 3

    H = thl.Hessian(loss, w)
    H.keep_passes = False  # plain products run the forward pass each time
    eye = np.eye(2)
    H.hvp(eye[0])
    calls.clear()
    for column in eye:
        H.hvp(column)
    assert len(calls) == 2
    calls.clear()
    with H.fixed_point() as point:
        products = [H.hvp(eye[0]), H.hvp(eye), H.hvp(eye[1]), H.hvp(eye[:, :1])]
        assert len(calls) == 1
        H.set_parameters([2.0, 1.0])
        moved = H.hvp(eye[0])
        assert len(calls) == 2 and point.starts == 2
    np.testing.assert_allclose(products[1], [[12.0, 18.0], [18.0, 12.0]], rtol=1e-15)
    np.testing.assert_allclose(products[0], [12.0, 18.0], rtol=1e-15)
    np.testing.assert_allclose(products[2], [18.0, 12.0], rtol=1e-15)
    np.testing.assert_allclose(moved, [24.0, 72.0], rtol=1e-15)


def test_later_blocks_reuse_the_split_product():
    model = _mlp()
    x, y = _data()
    H = _hessian(model, x, y, batch_size=10)  # 3 batches
    traces = []
    trace = H._engine.fixed_point_pass

    def traced(*args):
        traces.append(1)
        return trace(*args)

    H._engine.fixed_point_pass = traced
    V = np.random.default_rng(6).standard_normal((H.n, 2))
    start = H.parameters()
    for shift in (0.0, 0.1, 0.0):
        H.set_parameters(start + shift)
        plain = H.hvp(V)
        with H.fixed_point() as point:
            fixed = H.hvp(V)
            again = H.hvp(V)
        np.testing.assert_allclose(fixed, plain, rtol=0, atol=1e-13 * np.abs(plain).max())
        np.testing.assert_array_equal(again, fixed)
        assert point.starts == 1 and point.estimated_bytes > 0
    assert len(traces) == 1  # one trace (and one split) for all blocks


def test_an_error_inside_the_passes_raises_instead_of_hanging():
    w = tf.Variable([1.0, 2.0], dtype=tf.float64)

    def loss(w):
        return tf.reduce_sum(tf.debugging.check_numerics(w, "bad weights") ** 3)

    H = thl.Hessian(loss, w)
    with H.fixed_point():
        np.testing.assert_allclose(H.hvp(np.eye(2)), np.diag([6.0, 12.0]))
        w.assign([np.inf, 1.0])
        with pytest.raises(tf.errors.InvalidArgumentError, match="bad weights"):
            H.hvp(np.eye(2))
        w.assign([1.0, 1.0])
        np.testing.assert_allclose(H.hvp(np.eye(2)), np.diag([6.0, 6.0]))


def test_staging_hands_tensorflow_an_aligned_copy_of_any_layout():
    import threading

    from tfhess_linop._staging import Staging

    staging = Staging()
    rng = np.random.default_rng(6)
    block = rng.standard_normal((301, 6))
    for array in (block, np.asfortranarray(block), block[::2, 1::2], block[:, 0]):
        tensor = staging.tensor(array)
        assert tensor.dtype == tf.float64 and tuple(tensor.shape) == array.shape
        np.testing.assert_array_equal(tensor.numpy(), array)
        # The buffer TensorFlow reads is 64-byte aligned and is not `array`.
        assert np.asarray(tensor).ctypes.data % 64 == 0
        assert not np.shares_memory(np.asarray(tensor), block)
        # In a float32 model's dtype: the cast (round to nearest) happens in the copy.
        single = staging.tensor(array.T, np.float32)
        assert single.dtype == tf.float32 and tuple(single.shape) == array.T.shape
        np.testing.assert_array_equal(single.numpy(), array.T.astype(np.float32))
        assert np.asarray(single).ctypes.data % 64 == 0
    # Each thread has its own buffer: concurrent callers do not overwrite each other.
    views = {}

    def stage(name, value):
        views[name] = np.asarray(staging.tensor(np.full(50, value)))

    threads = [threading.Thread(target=stage, args=(i, float(i))) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(3):
        np.testing.assert_array_equal(views[i], float(i))


@pytest.mark.parametrize("route", ["plain", "kept", "fixed"])
def test_products_are_written_into_out(route):
    # Any layout of `out`, `out` the request itself, several local batches
    # (the kept passes add their parts into `out`): the values of a product
    # from scratch, in the caller's array.
    model = _mlp()
    x, y = _data()
    H = _hessian(model, x, y, batch_size=7)
    rng = np.random.default_rng(8)
    block = rng.standard_normal((H.n, 3))
    reference, reference_one = H.hvp(block), H.hvp(block[:, 1])
    atol = 1e-13 * np.abs(reference).max()
    H.keep_passes = route == "kept"
    fixed = route == "fixed"
    with H.fixed_point() if fixed else contextlib.nullcontext() as point:
        for layout in ("C", "F"):
            out = np.full(block.shape, np.nan, order=layout)
            assert H.hvp(block, out=out) is out
            np.testing.assert_allclose(out, reference, rtol=0, atol=atol)
        aliased = np.asfortranarray(block)
        assert H.hvp(aliased, out=aliased) is aliased
        np.testing.assert_allclose(aliased, reference, rtol=0, atol=atol)
        one = np.zeros(H.n)
        assert H.hvp(block[:, 1], out=one) is one
        np.testing.assert_allclose(one, reference_one, rtol=0, atol=atol)
        # A strided view of a larger array: only its entries are written.
        wide = np.zeros((H.n, 6))
        H.hvp(block, out=wide[:, ::2])
        np.testing.assert_allclose(wide[:, ::2], reference, rtol=0, atol=atol)
        np.testing.assert_array_equal(wide[:, 1::2], 0.0)
    if fixed:
        assert point.active and point.starts == 1
    if route == "kept":
        assert H._kept.active and H._kept.starts == 1


def test_out_is_checked_before_any_product(monkeypatch):
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y)

    def computed(*args, **kwargs):
        pytest.fail("a product was computed")

    monkeypatch.setattr(H, "_sum", computed)
    monkeypatch.setattr(_fixed_point.FixedPoint, "product", computed)
    block = np.ones((H.n, 2))
    read_only = np.zeros((H.n, 2))
    read_only.flags.writeable = False
    for out, error, match in [
        (np.zeros((H.n, 2), np.float32), TypeError, "float64"),
        ([[0.0, 0.0]] * H.n, TypeError, "NumPy array"),
        (np.zeros((H.n, 3)), ValueError, "shape"),
        (np.zeros(H.n), ValueError, "shape"),
        (read_only, ValueError, "read-only"),
    ]:
        with pytest.raises(error, match=match):
            H.hvp(block, out=out)


def test_copy_cast_copies_every_layout_in_slabs():
    from tfhess_linop._staging import copy_cast

    rng = np.random.default_rng(9)
    # Wider than one slab of 512 columns, not a multiple of it.
    rows = rng.standard_normal((5, 1300))
    for source in (rows, np.asfortranarray(rows), rows.T.copy().T):
        for order in ("C", "F"):
            destination = np.empty(rows.shape, order=order)
            copy_cast(destination, source)
            np.testing.assert_array_equal(destination, rows)
            single = np.empty(rows.shape, np.float32, order=order)
            copy_cast(single, source)
            np.testing.assert_array_equal(single, rows.astype(np.float32))


@pytest.mark.parametrize("chunk", [7, 1 << 17])
def test_copy_cast_finds_every_non_finite_entry(monkeypatch, chunk):
    # The check runs on each piece of the copy: in slabs (transposing), in
    # chunks of one order (a small chunk makes many), or in one piece.
    from tfhess_linop import _staging

    monkeypatch.setattr(_staging, "_CHUNK", chunk)
    rng = np.random.default_rng(10)
    rows = rng.standard_normal((5, 1300))
    for source in (rows, np.asfortranarray(rows), rows[:, 0], rows[:, ::3]):
        for dtype in (np.float64, np.float32):
            destination = np.empty(source.shape[::-1], dtype).T
            assert _staging.copy_cast(destination, source, check=True)
            np.testing.assert_array_equal(destination, source.astype(dtype))
            for position in (0, source.size // 2, source.size - 1):
                for bad in (np.nan, np.inf, -np.inf):
                    broken = source.copy(order="K")
                    flat = broken.ravel(order="K")
                    assert np.shares_memory(flat, broken)
                    flat[position] = bad
                    assert not _staging.copy_cast(destination, broken, check=True)
                    # Without the check the copy says nothing.
                    assert _staging.copy_cast(destination, broken)
    # Finite entries whose sum (or float32 cast) overflows are finite.
    huge = np.full(300, 1e306)
    assert _staging.copy_cast(np.empty(300), huge, check=True)
    with pytest.warns(RuntimeWarning, match="overflow encountered in cast"):
        # NumPy's own warning for a cast that overflows, as without the check.
        assert _staging.copy_cast(np.empty(300, np.float32), huge, check=True)


def test_a_non_finite_request_keeps_the_passes():
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y)
    v = np.random.default_rng(11).standard_normal(H.n)
    first = H.hvp(v)
    for bad in (np.nan, np.inf):
        broken = v.copy()
        broken[-1] = bad
        with pytest.raises(ValueError, match="non-finite"):
            H.hvp(broken)
    np.testing.assert_array_equal(H.hvp(v), first)
    assert H._kept.active and H._kept.starts == 1


def test_recycled_results_are_reused_only_once_nothing_refers_to_them(monkeypatch):
    import weakref

    from tfhess_linop import _staging

    recycled = _staging.Recycled()
    small = recycled.empty((5, 3))
    assert recycled.empty((5, 3)) is not small  # under the size: always fresh
    monkeypatch.setattr(_staging, "_RECYCLE_BYTES", 0)
    first = recycled.empty((5, 3))
    assert recycled.empty((5, 3)) is not first  # still held by the caller
    view = recycled.empty((5, 3))[:, 1]
    assert recycled.empty((5, 3)) is not view.base  # a view keeps it
    del view
    held = weakref.ref(recycled.empty((5, 3)))  # dropped at once
    assert recycled.empty((5, 3)) is held()
    assert recycled.empty((4, 3)) is not held()  # another shape
    recycled.release()
    assert held() is None


def test_block_products_reuse_a_result_the_caller_dropped(monkeypatch):
    import weakref

    from tfhess_linop import _staging

    monkeypatch.setattr(_staging, "_RECYCLE_BYTES", 0)
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y)
    reference = _hessian(model, x, y)
    rng = np.random.default_rng(12)
    V, W = rng.standard_normal((H.n, 4)), rng.standard_normal((H.n, 4))
    expected_V, expected_W = reference.hvp(V), reference.hvp(W)
    atol = 1e-13 * np.abs(expected_V).max()
    kept = H.hvp(V)
    other = H.hvp(W)  # `kept` is still held: not written into
    assert not np.shares_memory(kept, other)
    np.testing.assert_allclose(kept, expected_V, rtol=0, atol=atol)
    np.testing.assert_allclose(other, expected_W, rtol=0, atol=atol)
    column = other[:, 2]
    del other
    again = H.hvp(V)  # a view of `other` is held
    assert not np.shares_memory(again, column)
    np.testing.assert_allclose(column, expected_W[:, 2], rtol=0, atol=atol)
    base = weakref.ref(again.base)
    del again
    reused = H.hvp(W)
    assert reused.base is base()
    np.testing.assert_allclose(reused, expected_W, rtol=0, atol=atol)
    with H.fixed_point():
        # The block's own passes, and its own results.
        assert not np.shares_memory(H.hvp(W), reused)
    assert base() is not None  # the caller's
    del reused
    assert base() is None  # the kept passes were released with the block
