"""GGN, Fisher and empirical Fisher against dense references built independently.

References: per-sample output Hessians of losses written out here in plain
TensorFlow (nested tapes), Jacobians of the split point from
``tape.jacobian``, per-sample gradients one sample at a time, and the
Fisher of a categorical distribution in closed form.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.sparse.linalg import eigsh

import tfhess_linop as thl

N, D, C = 12, 3, 4


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    return x, rng.integers(0, C, N), rng.standard_normal((N, C)), rng


def _model(activation=None, seed=0, hidden=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    h = keras.layers.Dense(hidden, activation="tanh", dtype="float64")(inputs)
    z = keras.layers.Dense(C, dtype="float64")(h)
    out = z if activation is None else keras.layers.Activation(activation, dtype="float64")(z)
    return keras.Model(inputs, out), keras.Model(inputs, z)


def _flat_jacobian(model, x):
    """(N, C, n): the Jacobian of `model`'s output per sample."""
    with tf.GradientTape() as tape:
        out = model(x)
    pieces = tape.jacobian(out, model.trainable_variables)
    return np.concatenate([np.reshape(p.numpy(), (N, C, -1)) for p in pieces], axis=2)


def _output_hessians(loss_of_row, s, targets):
    """Per-sample Hessians of ``loss_of_row(s_i, t_i)`` in s_i: (N, C, C)."""
    result = []
    for i in range(N):
        si = tf.constant(s[i])
        with tf.GradientTape() as outer:
            outer.watch(si)
            with tf.GradientTape() as inner:
                inner.watch(si)
                value = loss_of_row(si, targets[i])
            grad = inner.gradient(value, si)
        result.append(outer.jacobian(grad, si).numpy())
    return np.array(result)


def _row_gradients(loss_of_row, s, targets):
    result = []
    for i in range(N):
        si = tf.constant(s[i])
        with tf.GradientTape() as tape:
            tape.watch(si)
            value = loss_of_row(si, targets[i])
        result.append(tape.gradient(value, si).numpy())
    return np.array(result)


def _mse(s, t):
    return tf.reduce_mean((s - t) ** 2)


def _sparse_logits(s, t):
    return -tf.nn.log_softmax(s)[int(t)]


def _dense_logits(s, t):
    return -tf.reduce_sum(t * tf.nn.log_softmax(s))


def _binary_logits(s, t):
    return tf.reduce_mean(tf.nn.softplus(s) - t * s)


def _probabilities(s, t):
    return -tf.reduce_sum(t * tf.math.log(s / tf.reduce_sum(s)))


# (name, output activation, Keras loss, reference loss of the split point, targets)
CASES = {
    "mse": (None, "mse", _mse, "real"),
    "sparse-logits": (
        None,
        keras.losses.SparseCategoricalCrossentropy(True),
        _sparse_logits,
        "int",
    ),
    "softmax-output": ("softmax", "categorical_crossentropy", _dense_logits, "onehot"),
    "sigmoid-output": ("sigmoid", "binary_crossentropy", _binary_logits, "binary"),
    "probabilities": ("softplus", "categorical_crossentropy", _probabilities, "onehot"),
}


def _targets(kind, labels, real):
    if kind == "int":
        return labels
    if kind == "onehot":
        return np.eye(C)[labels]
    if kind == "binary":
        return (real > 0).astype(np.float64)
    return real


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    activation, loss, reference, kind = CASES[request.param]
    x, labels, real, _ = _data()
    model, logits_model = _model(activation)
    y = _targets(kind, labels, real)
    split_model = model if activation in (None, "softplus") else logits_model
    s = split_model(x).numpy()
    J = _flat_jacobian(split_model, x)
    H_out = _output_hessians(reference, s, y)
    ggn = np.einsum("ica,icd,idb->ab", J, H_out, J) / N
    grads = np.einsum("ic,ica->ia", _row_gradients(reference, s, y), J)
    return dict(
        name=request.param, model=model, loss=loss, x=x, y=y, s=s, J=J, ggn=ggn, grads=grads
    )


def _close(a, b, rtol=1e-10):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_ggn_equals_dense_jacobian_reference(case):
    G = thl.GGN.from_keras(case["model"], case["loss"], case["x"], case["y"], batch_size=5)
    dense = G.dense()
    _close(dense, case["ggn"])
    if case["name"] != "probabilities":
        # Convex in the split point: positive semi-definite.
        assert np.linalg.eigvalsh(dense).min() >= -1e-12 * np.abs(dense).max()
    if case["name"] == "sparse-logits":
        v = np.random.default_rng(1).standard_normal(G.n)
        _close(G.mvp(v), case["ggn"] @ v)
        top = eigsh(thl.as_linop(G), k=2, which="LA", return_eigenvectors=False)
        _close(np.sort(top), np.linalg.eigvalsh(case["ggn"])[-2:], rtol=1e-8)
        # variables=: the block of the last layer's parameters (the last in the layout).
        last = case["model"].layers[-1]
        block = thl.GGN.from_keras(
            case["model"], case["loss"], case["x"], case["y"], variables=[last]
        )
        k = block.n
        _close(block.dense(), case["ggn"][-k:, -k:])


# The output factor is the same code for every loss; three cases suffice.
@pytest.mark.parametrize("case", ["mse", "sparse-logits", "softmax-output"], indirect=True)
def test_empirical_fisher_equals_per_sample_gradients(case):
    E = thl.EmpiricalFisher.from_keras(case["model"], case["loss"], case["x"], case["y"])
    g = case["grads"]
    _close(E.dense(block_size=7), g.T @ g / N)


# Sparse logits and a sigmoid output have the GGN's Fisher, as mse (checked here).
@pytest.mark.parametrize("case", ["mse", "softmax-output", "probabilities"], indirect=True)
def test_exact_fisher_equals_categorical_fisher_in_closed_form(case):
    if case["name"] == "mse":
        F = thl.Fisher.from_keras(case["model"], case["loss"], case["x"], case["y"])
        _close(F.dense(), case["ggn"])  # Gaussian and Bernoulli: the GGN
        return
    s, J = case["s"], case["J"]
    if case["name"] == "probabilities":
        p = s / s.sum(1, keepdims=True)
        # g_k = -e_k / s_k + 1 / Σs (the gradient of -log(s_k / Σs)); E_k[g gᵀ].
        scores = -np.eye(C)[None] / s[:, None, :] + 1.0 / s.sum(1)[:, None, None]
        fisher_out = np.einsum("ik,ika,ikb->iab", p, scores, scores)
    else:
        p = tf.nn.softmax(s).numpy()
        fisher_out = np.einsum("ia,ab->iab", p, np.eye(C)) - np.einsum("ia,ib->iab", p, p)
    reference = np.einsum("ica,icd,idb->ab", J, fisher_out, J) / N
    F = thl.Fisher.from_keras(case["model"], case["loss"], case["x"], case["y"], batch_size=5)
    _close(F.dense(), reference)
    if case["name"] == "probabilities":
        # Sparse labels from probabilities: the expectation by enumeration.
        Fs = thl.Fisher.from_keras(
            case["model"], "sparse_categorical_crossentropy", case["x"], np.argmax(case["y"], 1)
        )
        _close(Fs.dense(), reference)


def test_monte_carlo_fisher_within_its_standard_error():
    """u^T F_mc u against u^T F u, with the exact variance of the categorical draws."""
    x, labels, _, rng = _data(3)
    model, _ = _model(None, seed=3, hidden=4)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    draws = 3
    F = thl.Fisher.from_keras(model, loss, x, labels, mc_samples=draws, seed=7, batch_size=5)
    J = _flat_jacobian(model, x)
    p = tf.nn.softmax(model(x)).numpy()
    z_scores = []
    Fu_all = F.mvp(U := rng.standard_normal((F.n, 8)))
    for column in range(U.shape[1]):
        w = J @ U[:, column]  # (N, C): J_i u
        centred = w[:, None, :] @ (np.eye(C)[None] - p[:, None, :]).transpose(0, 2, 1)
        squares = centred[:, 0, :] ** 2  # (w · (e_k - p))^2 for each class k
        mean = (p * squares).sum(1)
        variance = (p * squares**2).sum(1) - mean**2
        exact = mean.sum() / N
        error = np.sqrt(variance.sum() / draws) / N
        z_scores.append((U[:, column] @ Fu_all[:, column] - exact) / error)
    assert np.max(np.abs(z_scores)) < 4.5, z_scores
    assert not np.allclose(z_scores, 0)  # an estimate, not the exact Fisher
    dense = F.dense()
    assert np.linalg.eigvalsh(dense).min() >= -1e-12 * np.abs(dense).max()
    # (The same draws for every batching: checked with the batch invariance.)


def test_ggn_equals_hessian_for_linear_model_with_weights_masks_and_regularizer():
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(4)
    x = rng.standard_normal((N, 5, 2))
    x[:3, 3:] = 0.0  # masked time steps
    y = rng.standard_normal((N, 5, 2))
    inputs = keras.Input((5, 2))
    masked = keras.layers.Masking(0.0, dtype="float64")(inputs)
    out = keras.layers.Dense(2, dtype="float64", kernel_regularizer=keras.regularizers.L2(0.1))(
        masked
    )
    model = keras.Model(inputs, out)
    model.compile(loss="mse")
    weights = rng.uniform(0.5, 2.0, (N, 5))  # per time step
    options = dict(sample_weight=weights, batch_size=5)
    H = thl.Hessian.from_keras(model, None, x, y, **options).dense()
    G = thl.GGN.from_keras(model, None, x, y, **options)
    _close(G.dense(), H)


def test_batch_invariance_with_loss_weights_and_sample_weights():
    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    inputs = keras.Input((D,))
    h = keras.layers.Dense(3, activation="tanh", dtype="float64")(inputs)
    a = keras.layers.Dense(C, activation="softmax", dtype="float64", name="a")(h)
    b = keras.layers.Dense(2, dtype="float64", name="b")(h)
    model = keras.Model(inputs, {"a": a, "b": b})
    model.compile(
        loss={"a": "sparse_categorical_crossentropy", "b": "mse"},
        loss_weights={"a": 0.7, "b": 1.9},
    )
    x = rng.standard_normal((N, D))
    y = {"a": rng.integers(0, C, N), "b": rng.standard_normal((N, 2))}
    weights = rng.uniform(0.2, 1.5, N)
    # (The empirical Fisher's batch and rank invariance is checked under MPI.)
    for cls, options in ((thl.GGN, {}), (thl.Fisher, {"mc_samples": 2})):
        whole = cls.from_keras(model, None, x, y, sample_weight=weights, **options).dense()
        split = cls.from_keras(
            model, None, x, y, sample_weight=weights, batch_size=5, **options
        ).dense()
        _close(split, whole)
        assert np.abs(whole).max() > 0


def test_unsupported_losses_and_arguments_raise():
    x, labels, real, _ = _data()
    model, _ = _model()
    with pytest.raises(
        ValueError, match=r"exact output Hessian for mean squared error.*'mean_absolute_error'"
    ):
        thl.GGN.from_keras(model, "mae", x, real)
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        thl.Fisher.from_keras(model, smoothed, x, np.eye(C)[labels])
    with pytest.raises(ValueError, match="`mc_samples`"):
        thl.Fisher.from_keras(model, "mse", x, real, mc_samples=0)
    recurrent = keras.Sequential([keras.Input((2, D)), keras.layers.SimpleRNN(2, dtype="float64")])
    with pytest.raises(ValueError, match="recurrent layers"):
        thl.GGN.from_keras(recurrent, "mse", x.reshape(-1, 2, D), real[::2, :2])

    class Custom(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
            return tf.reduce_mean(y_pred**2)

    inputs = keras.Input((D,))
    custom = Custom(inputs, keras.layers.Dense(1, dtype="float64")(inputs))
    with pytest.raises(ValueError, match="overrides `compute_loss`"):
        thl.GGN.from_keras(custom, None, x, real[:, :1])


def test_newton_cg_with_the_ggn_takes_damped_gauss_newton_steps():
    """Each step solves (G + λI) p = -g (no negative curvature), and training descends.

    On this problem (a two-spiral classifier, tanh layers) the Hessian with
    negative-curvature steps reaches a lower loss than the GGN for the same
    number of products; the GGN's steps are the Gauss-Newton ones, checked
    against a dense solve.
    """
    rng = np.random.default_rng(8)
    t = rng.uniform(0, 3 * np.pi, 48)
    labels = rng.integers(0, 2, 48)
    x = np.stack([t * np.cos(t + np.pi * labels), t * np.sin(t + np.pi * labels)], 1) / 5
    keras.utils.set_random_seed(8)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(6, activation="tanh", dtype="float64"),
            keras.layers.Dense(2, dtype="float64"),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    H = thl.Hessian.from_keras(model, loss, x, labels)
    damping = 1e-2
    opt = thl.NewtonCG(H, curvature="ggn", damping=damping, cg_rtol=1e-12, max_cg_iter=200)
    assert isinstance(opt.curvature, thl.GGN)
    w0, g = H.parameters(), H.gradient()
    G = thl.GGN.from_hessian(H).dense()
    newton = np.linalg.solve(G + damping * np.eye(H.n), -g)
    first = opt.step()
    assert not first.negative_curvature
    _close(H.parameters() - w0, first.step_length * newton, rtol=1e-7)
    history = opt.minimize(steps=12, gtol=0.0)
    assert not history.negative_curvature.any()
    assert np.all(np.diff(history.losses) < 0)
    assert history.loss < 0.7 * first.loss
    with pytest.raises(ValueError, match="`curvature`"):
        thl.NewtonCG(H, curvature="fisher")
