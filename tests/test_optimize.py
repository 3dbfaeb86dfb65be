"""Any point: `Hessian.parameters`/`set_parameters`/`at`, `ScipyObjective`, `minimize`.

References are independent of the package: the dense Hessian and the
gradient from nested ``tf.GradientTape``s (conftest), closed forms, and
:func:`numpy.linalg.lstsq` or SciPy on the dense problem for least squares.
"""

import warnings

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import tfhess_linop as thl
from conftest import dense_reference, gradient_reference, mlp, mse_mean
from tfhess_linop.optimize import BoundHessian

# ------------------------------------------------------------------ problems


def least_squares(m=30, n=5, seed=0):
    """½‖Xw − y‖² on a plain variable, with its lstsq solution."""
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((m, n)), rng.standard_normal(m)
    w = tf.Variable(np.zeros(n))
    H = thl.Hessian(lambda w: 0.5 * tf.reduce_sum((tf.linalg.matvec(X, w) - y) ** 2), w)
    return H, w, X, y, np.linalg.lstsq(X, y, rcond=None)[0]


@pytest.fixture
def network():
    """A 3-5-2 tanh MLP on 11 samples (32 parameters) and its mean MSE."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((11, 3)), rng.standard_normal((11, 2))
    model = mlp()
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=4)
    return model, H, mse_mean(model, x, y)


def reference_at(model, loss, w):
    """(value, gradient, dense Hessian) at flat `w` from nested tapes, then restore."""
    saved = [v.numpy() for v in model.trainable_variables]
    start = 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        v.assign(w[start : start + size].reshape(v.shape))
        start += size
    value, gradient = gradient_reference(loss, model.trainable_variables)
    dense = dense_reference(loss, model.trainable_variables)
    for v, s in zip(model.trainable_variables, saved, strict=True):
        v.assign(s)
    return value, gradient, dense


# ---------------------------------------------------------------- parameters


def test_parameters_is_the_flatten_layout(network):
    model, H, _ = network
    expected = np.concatenate([v.numpy().reshape(-1) for v in model.trainable_variables])
    assert np.array_equal(H.parameters(), expected)
    assert H.parameters().dtype == np.float64
    H.parameters()[0] = 99.0  # a copy
    assert np.array_equal(H.parameters(), expected)


def test_set_parameters_assigns_and_round_trips(network, rng):
    model, H, _ = network
    w = rng.standard_normal(H.n)
    H.set_parameters(w)
    assert np.array_equal(H.parameters(), w)
    assert np.array_equal(model.trainable_variables[0].numpy().reshape(-1), w[:15])
    H.set_parameters(list(w))  # array_like
    H.set_parameters(np.arange(H.n))  # integers are real
    assert np.array_equal(H.parameters(), np.arange(H.n, dtype=float))


@pytest.mark.parametrize(
    ("w", "error", "message"),
    [
        (np.zeros(31), ValueError, r"`w` must have shape \(32,\); got \(31,\)"),
        (np.zeros((32, 1)), ValueError, r"`w` must have shape \(32,\); got \(32, 1\)"),
        (np.zeros(32, dtype=complex), TypeError, "`w` must be a real array; got dtype complex"),
        (np.array(["a"] * 32), TypeError, "`w` must be a real array"),
        (np.r_[np.zeros(31), np.nan], ValueError, "`w` must be finite; got nan at index 31"),
        (np.r_[np.inf, np.zeros(31)], ValueError, "`w` must be finite; got inf at index 0"),
    ],
)
def test_set_parameters_refuses_bad_vectors_and_changes_nothing(network, w, error, message):
    _, H, _ = network
    before = H.parameters()
    with pytest.raises(error, match=message):
        H.set_parameters(w)
    with pytest.raises(error, match=message):
        with H.at(w):
            pass
    assert np.array_equal(H.parameters(), before)


def test_set_parameters_refuses_overflow_of_a_float32_model():
    model = mlp(dtype="float32")
    H = thl.Hessian.from_keras(model, "mse", np.ones((4, 3), "float32"), np.ones((4, 2), "float32"))
    w = np.full(H.n, 0.1)
    H.set_parameters(w)
    # rounded to float32, read back exactly
    assert np.array_equal(H.parameters(), w.astype(np.float32).astype(np.float64))
    with pytest.raises(ValueError, match="overflow float32"):
        H.set_parameters(np.full(H.n, 1e300))


def test_at_restores_bit_for_bit_also_after_an_exception(network, rng):
    model, H, loss = network
    before = [v.numpy().copy() for v in model.trainable_variables]
    w = rng.standard_normal(H.n)
    with H.at(w) as inside:
        assert inside is H
        assert np.array_equal(H.parameters(), w)
        value = H.loss_value()
    assert value == pytest.approx(reference_at(model, loss, w)[0], rel=1e-12)
    for v, b in zip(model.trainable_variables, before, strict=True):
        assert np.array_equal(v.numpy(), b)

    with pytest.raises(RuntimeError, match="inside"):
        with H.at(w):
            raise RuntimeError("inside")
    for v, b in zip(model.trainable_variables, before, strict=True):
        assert np.array_equal(v.numpy(), b)


# ---------------------------------------------------------- ScipyObjective


def test_objective_matches_nested_tapes_at_several_points(network, rng):
    model, H, loss = network
    start = H.parameters()
    obj = thl.ScipyObjective(H)
    for scale in (0.0, 0.3, 1.0):
        w = start + scale * rng.standard_normal(H.n)
        value, gradient, dense = reference_at(model, loss, w)
        np.testing.assert_allclose(obj.fun(w), value, rtol=1e-12)
        np.testing.assert_allclose(obj.jac(w), gradient, rtol=1e-10, atol=1e-13)
        got_value, got_gradient = obj.fun_and_jac(w)
        assert got_value == obj.fun(w)
        np.testing.assert_allclose(got_gradient, gradient, rtol=1e-10, atol=1e-13)
        p = rng.standard_normal(H.n)
        np.testing.assert_allclose(obj.hessp(w, p), dense @ p, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(obj.hess(w) @ np.eye(H.n), dense, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(obj.dense_hess(w), dense, rtol=1e-9, atol=1e-12)
        assert np.array_equal(H.parameters(), w)  # left at the last point


def test_value_and_gradient_come_from_one_cached_pass(network, rng):
    _, H, _ = network
    obj = thl.ScipyObjective(H)
    w = rng.standard_normal(H.n)
    value = obj.fun(w)
    gradient = obj.jac(w.copy())
    obj.fun_and_jac(w)
    assert obj.n_evaluations == 1
    gradient[:] = 0.0  # the cache keeps its own copy
    assert np.any(obj.jac(w))
    obj.fun(w + 1e-3)
    assert obj.n_evaluations == 2
    assert obj.fun(w) == value
    assert obj.n_evaluations == 3


def test_cache_is_a_function_of_w_not_of_what_the_variables_hold(network, rng):
    _, H, _ = network
    obj = thl.ScipyObjective(H)
    w = rng.standard_normal(H.n)
    value = obj.fun(w)
    H.set_parameters(np.zeros(H.n))  # moved behind the objective's back
    assert obj.fun(w) == value
    # a gradient after an external move is evaluated at w, not at 0
    obj2 = thl.ScipyObjective(H)
    H.set_parameters(np.zeros(H.n))
    assert obj2.fun(w) == value


def test_bound_hessian_evaluates_at_its_point_whatever_happened_in_between(network, rng):
    model, H, loss = network
    obj = thl.ScipyObjective(H)
    w = rng.standard_normal(H.n)
    dense_w = reference_at(model, loss, w)[2]
    B = obj.hess(w)
    assert isinstance(B, BoundHessian)
    assert B.shape == (H.n, H.n) and B.dtype == np.float64
    w_given = w.copy()
    w[:] = 0.0  # the operator copied its point
    for elsewhere in (np.zeros(H.n), rng.standard_normal(H.n)):
        obj.fun_and_jac(elsewhere)
        obj.hessp(elsewhere, rng.standard_normal(H.n))
        H.set_parameters(elsewhere + 1.0)
        p = rng.standard_normal(H.n)
        np.testing.assert_allclose(B @ p, dense_w @ p, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(B.matmat(np.eye(H.n)[:, :4]), dense_w[:, :4], rtol=1e-9)
        np.testing.assert_allclose(B.T @ p, dense_w @ p, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(B.toarray(), dense_w, rtol=1e-9, atol=1e-12)
    assert np.array_equal(B.point, w_given)
    with pytest.raises(TypeError, match=r"hessp=objective\.hessp"):
        np.asarray(B)


def test_objective_accepts_an_operator_and_refuses_other_things(network):
    _, H, _ = network
    assert thl.ScipyObjective(thl.as_linop(H)).hessian is H
    with pytest.raises(TypeError, match=r"`hessian` must be a tfhess_linop\.Hessian"):
        thl.ScipyObjective(np.eye(3))
    obj = thl.ScipyObjective(H)
    with pytest.raises(ValueError, match=r"`w` must have shape \(32,\)"):
        obj.fun(np.zeros(3))
    with pytest.raises(ValueError, match="`w` must be finite"):
        obj.hess(np.full(H.n, np.nan))
    assert "ScipyObjective(n=32" in repr(obj)


# ---------------------------------------------------------------- minimize

HESSP_METHODS = ["Newton-CG", "trust-ncg", "trust-krylov"]
OPTIONS = {
    "Newton-CG": {"xtol": 1e-14},
    "trust-ncg": {"gtol": 1e-12},
    "trust-krylov": {"gtol": 1e-12},
    "trust-exact": {"gtol": 1e-12},
    "dogleg": {"gtol": 1e-12},
    "BFGS": {"gtol": 1e-12},
    "L-BFGS-B": {"gtol": 1e-13, "ftol": 1e-16},
    "CG": {"gtol": 1e-12},
}


def assert_converged(res, method, jac):
    """SciPy's success flag, or Newton-CG's "precision loss" at a stationary point.

    SciPy 1.17's Newton-CG ends its last line search with status 2 at the
    optimum of these problems with a NumPy ``hessp`` as with ours: the loss
    cannot decrease below round-off there. The point is what counts.
    """
    if not res.success:
        assert method == "Newton-CG" and res.status == 2, res.message
        assert np.linalg.norm(jac(res.x)) < 1e-7


@pytest.mark.parametrize("method", HESSP_METHODS)
def test_scipy_methods_with_hessp_reach_lstsq(method):
    H, _, _, _, solution = least_squares()
    obj = thl.ScipyObjective(H)
    res = scipy.optimize.minimize(
        obj.fun, np.zeros(H.n), jac=obj.jac, hessp=obj.hessp, method=method, options=OPTIONS[method]
    )
    assert_converged(res, method, obj.jac)
    np.testing.assert_allclose(res.x, solution, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["Newton-CG", "trust-constr"])
def test_scipy_methods_with_the_bound_operator_as_hess(method):
    H, _, X, y, solution = least_squares()
    obj = thl.ScipyObjective(H)
    options = {"xtol": 1e-14} if method == "Newton-CG" else {"gtol": 1e-13, "xtol": 1e-14}
    res = scipy.optimize.minimize(
        obj.fun, np.zeros(H.n), jac=obj.jac, hess=obj.hess, method=method, options=options
    )
    assert_converged(res, method, obj.jac)
    # SciPy's trust-constr stops on its trust radius near 1e-8 even with the
    # exact dense Hessian: compare with that run, and with lstsq to its accuracy.
    dense = scipy.optimize.minimize(
        lambda v: 0.5 * np.sum((X @ v - y) ** 2),
        np.zeros(H.n),
        jac=lambda v: X.T @ (X @ v - y),
        hess=lambda v: X.T @ X,
        method=method,
        options=options,
    )
    np.testing.assert_allclose(res.x, dense.x, rtol=0, atol=1e-8)
    atol = 1e-9 if method == "Newton-CG" else 1e-7
    np.testing.assert_allclose(res.x, solution, rtol=0, atol=atol)


@pytest.mark.parametrize(
    "method", [*HESSP_METHODS, "trust-exact", "dogleg", "BFGS", "L-BFGS-B", "CG"]
)
def test_minimize_reaches_lstsq_and_leaves_the_model_at_res_x(method):
    H, w, _, _, solution = least_squares()
    w.assign(np.full(H.n, 0.5))  # minimize starts from the current parameters
    seen = []
    res = thl.minimize(H, method=method, options=OPTIONS[method], callback=seen.append)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, solution, rtol=0, atol=1e-9)
    assert np.array_equal(w.numpy(), res.x)
    assert seen  # the callback was passed on
    assert res.n_evaluations >= 1
    assert (res.n_hvp > 0) == (method not in ("BFGS", "L-BFGS-B", "CG"))


def test_minimize_trust_constr_and_a_derivative_free_method():
    H, w, _, _, solution = least_squares(n=3)
    res = thl.minimize(H, method="trust-constr", options={"gtol": 1e-13, "xtol": 1e-14})
    assert res.success
    np.testing.assert_allclose(res.x, solution, atol=1e-7)
    assert np.array_equal(w.numpy(), res.x)
    res = thl.minimize(H, method="Nelder-Mead", x0=np.zeros(3), options={"xatol": 1e-8})
    assert res.n_hvp == 0
    assert np.array_equal(w.numpy(), res.x)


def test_minimize_restores_the_start_when_scipy_raises():
    H, w, _, _, _ = least_squares()
    start = np.linspace(-1.0, 1.0, H.n)
    w.assign(start)

    def stop(xk):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        thl.minimize(H, method="trust-krylov", callback=stop)
    assert np.array_equal(w.numpy(), start)


def test_minimize_argument_errors():
    H, _, _, _, _ = least_squares()
    for name in ("jac", "hess", "hessp", "args"):
        with pytest.raises(TypeError, match=f"`{name}` is set by tfhess_linop.minimize"):
            thl.minimize(H, **{name: None})
    with pytest.raises(TypeError, match="`method` must be a string"):
        thl.minimize(H, method=None)
    with pytest.raises(ValueError, match=r"`w` must have shape \(5,\)"):
        thl.minimize(H, x0=np.zeros(4))


def test_minimize_a_keras_model_against_keras_fit():
    """Linear regression with a bias: the minimiser is lstsq on [x 1]; fit's loss agrees."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3 + 0.1 * rng.standard_normal((40, 1))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")]
    )
    model.compile(loss="mse")
    H = thl.Hessian.from_keras(model, x=x, y=y, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = thl.minimize(H, method="trust-ncg", options={"gtol": 1e-9})
    assert res.success
    coefficients = np.linalg.lstsq(np.hstack([x, np.ones((40, 1))]), y, rcond=None)[0][:, 0]
    np.testing.assert_allclose(H.parameters(), coefficients, atol=1e-10)
    keras_loss = model.evaluate(x, y, batch_size=40, verbose=0)
    # Keras' evaluate computes the loss in floatx (float32).
    np.testing.assert_allclose(keras_loss, res.fun, rtol=1e-6)


def test_trust_krylov_trains_a_keras_mlp_to_a_stationary_point():
    rng = np.random.default_rng(5)
    x = rng.uniform(-2.0, 2.0, (60, 2))
    y = np.sin(x[:, :1]) * x[:, 1:] + 0.3 * rng.standard_normal((60, 1))
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(4, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    model.compile(loss="mse")
    H = thl.Hessian.from_keras(model, x=x, y=y)
    start = H.loss_value()
    # gtol 1e-6, not tighter: in the full suite (other thread settings, other
    # summation orders) SciPy's trust region once collapsed near 1e-7 with
    # "A bad approximation caused failure to predict improvement".
    res = thl.minimize(H, method="trust-krylov", options={"gtol": 1e-6, "maxiter": 300})
    assert res.success, res.message
    assert res.fun < start
    assert np.linalg.norm(H.gradient()) <= 1e-6
    assert np.linalg.eigvalsh(H.dense()).min() > -1e-8  # a minimum, not a saddle
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=60, verbose=0), res.fun, rtol=1e-6)
