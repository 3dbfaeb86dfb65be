"""NewtonCG: logistic regression, the seed's XOR network, saddles, damping."""

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import tfhess_linop as thl
from conftest import XOR_X, XOR_Y, xor_model
from tfhess_linop.newton import NewtonHistory, NewtonStep


def correct_outputs(model):
    return int((np.round(model(XOR_X).numpy()) == XOR_Y).sum())


# ----------------------------------------------------- logistic regression


@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5))
    probabilities = 1 / (1 + np.exp(-(X @ rng.standard_normal(5) + 0.3)))
    y = (rng.random(200) < probabilities).astype(np.float64)
    return X, y


def numpy_logistic_minimizer(X, y):
    """The minimizer by SciPy's trust-region Newton on a NumPy loss."""
    A = np.column_stack([X, np.ones(len(y))])

    def loss(theta):
        z = A @ theta
        return np.mean(np.logaddexp(0, z) - y * z)

    def grad(theta):
        return A.T @ (1 / (1 + np.exp(-(A @ theta))) - y) / len(y)

    def hess(theta):
        p = 1 / (1 + np.exp(-(A @ theta)))
        return (A * (p * (1 - p))[:, None]).T @ A / len(y)

    return scipy.optimize.minimize(
        loss,
        np.zeros(A.shape[1]),
        jac=grad,
        hess=hess,
        method="trust-exact",
        options={"gtol": 1e-12},
    ).x


def test_logistic_regression_converges_in_a_few_steps(logistic_data):
    X, y = logistic_data
    w = tf.Variable(np.zeros(5))
    b = tf.Variable(0.0, dtype=tf.float64)
    Xt, yt = tf.constant(X), tf.constant(y)

    def loss():
        logits = tf.linalg.matvec(Xt, w) + b
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=yt, logits=logits))

    H = thl.Hessian(loss, [w, b])
    opt = thl.NewtonCG(H)
    history = opt.minimize(steps=20, gtol=1e-6)
    assert history.converged
    assert history.grad_norm <= 1e-6
    assert len(history) <= 8
    assert not history.negative_curvature.any()
    assert np.all(np.diff(history.losses) < 0)
    # Superlinear: each of the last steps at least squares the reduction.
    assert history.grad_norms[-1] < history.grad_norms[-2] ** 1.5
    expected = numpy_logistic_minimizer(X, y)
    assert np.allclose(np.r_[w.numpy(), b.numpy()], expected, atol=1e-6)
    assert opt.hessian is H
    assert history.n_hvp == history.cg_iterations.sum() == opt.operator.n_hvp


# ------------------------------------------------------------------- XOR


def test_seed_xor_network_reaches_its_best_possible_fit():
    # The seed's 2-2-1 network with a softmax hidden layer: softmax of two
    # units is a sigmoid of one linear function z of the input, so the output
    # is monotone in z, and z(0,0) + z(1,1) = z(0,1) + z(1,0). No weights give
    # the XOR pattern (4/4); the best mean squared error is 1/6, with 3/4
    # correct (outputs 0, 2/3, 2/3, 2/3 in the order of z). The seed's
    # Hessian-based training ended with every output near 0.5 (3/4 after
    # rounding only by luck of the threshold).
    model = xor_model(seed=0)
    weights_before = [v.numpy().copy() for v in model.trainable_variables]
    opt = thl.NewtonCG.from_keras(model, "mse", XOR_X, XOR_Y)
    history = opt.minimize(steps=100, gtol=1e-8)
    assert history.converged
    assert history.loss == pytest.approx(1 / 6, abs=1e-6)
    assert correct_outputs(model) == 3
    assert history.negative_curvature.any()
    assert not any(
        np.array_equal(v.numpy(), before)
        for v, before in zip(model.trainable_variables, weights_before, strict=True)
    )
    mse = float(np.mean((model(XOR_X).numpy() - XOR_Y) ** 2))
    assert mse == pytest.approx(history.loss, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_network_with_sigmoid_hidden_layer_learns_xor(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(2, activation="sigmoid", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    history = thl.NewtonCG.from_keras(model, "mse", XOR_X, XOR_Y).minimize(steps=60, gtol=1e-8)
    assert history.converged
    assert correct_outputs(model) == 4
    assert history.loss < 1e-12


# -------------------------------------------------------- plain variables


def test_leaves_a_saddle_region_along_negative_curvature():
    # x² - y² + y⁴: saddle at the origin, minima at (0, ±1/√2) with value -1/4.
    w = tf.Variable([0.5, 0.1], dtype=tf.float64)
    opt = thl.NewtonCG(thl.Hessian(lambda w: w[0] ** 2 - w[1] ** 2 + w[1] ** 4, w))
    history = opt.minimize(steps=50, gtol=1e-10)
    assert history.converged
    assert history.negative_curvature.any()
    assert np.allclose(w.numpy(), [0.0, np.sqrt(0.5)], atol=1e-8)
    assert history.loss == pytest.approx(-0.25)


def test_damping_solves_the_damped_system():
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    w = tf.Variable([3.0, -1.0], dtype=tf.float64)
    At = tf.constant(A)
    opt = thl.NewtonCG(
        thl.Hessian(lambda w: 0.5 * tf.tensordot(w, tf.linalg.matvec(At, w), 1), w),
        damping=1.0,
        cg_rtol=1e-12,
    )
    start = w.numpy().copy()
    step = opt.step()
    assert isinstance(step, NewtonStep)
    assert step.step_length == 1.0 and not step.negative_curvature
    assert np.allclose(w.numpy(), start - np.linalg.solve(A + np.eye(2), A @ start))


def test_history_and_callback():
    w = tf.Variable([1.0, 2.0], dtype=tf.float64)
    opt = thl.NewtonCG(thl.Hessian(lambda w: tf.reduce_sum(tf.cosh(w)), w))
    seen = []
    history = opt.minimize(
        steps=10, gtol=0.0, callback=lambda step: seen.append(step) or len(seen) == 2
    )
    assert isinstance(history, NewtonHistory)
    assert len(history) == 2 == len(seen)
    assert history.message == "stopped by callback"
    assert history.losses.shape == history.grad_norms.shape == (3,)
    assert history.losses[-1] == pytest.approx(float(np.sum(np.cosh(w.numpy()))))
    assert history.grad_norms[-1] == pytest.approx(float(np.linalg.norm(np.sinh(w.numpy()))))
    assert history.step_lengths.shape == (2,)


def test_bad_arguments_raise():
    w = tf.Variable([1.0], dtype=tf.float64)
    H = thl.Hessian(lambda w: tf.reduce_sum(w**2), w)
    with pytest.raises(TypeError, match=r"`hessian` must be a tfhess_linop\.Hessian"):
        thl.NewtonCG(np.eye(2))
    with pytest.raises(ValueError, match="`damping` must be a finite non-negative"):
        thl.NewtonCG(H, damping=-1.0)
    with pytest.raises(ValueError, match=r"`armijo` must lie in \(0, 1\)"):
        thl.NewtonCG(H, armijo=1.5)
    with pytest.raises(ValueError, match="`max_cg_iter` must be an integer satisfying"):
        thl.NewtonCG(H, max_cg_iter=0)
    with pytest.raises(ValueError, match="`steps` must be a non-negative integer"):
        thl.NewtonCG(H).minimize(steps=-1)
