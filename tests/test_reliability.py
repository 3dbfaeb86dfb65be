"""Issue 13: no silent garbage, no silent state change (serial rows).

Every bad argument is refused up front with a message that names it, and
an interrupted Newton step leaves the weights where the step started. The
MPI rows (every rank raises, mismatched calls) are in ``test_mpi.py``.
"""

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import tensorflow as tf

import tfhess_linop as thl
from tfhess_linop.compat.numsa import Hessian as SeedHessian

N = 12


def dense_matrix():
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((N, N)))[0]
    return Q @ np.diag(np.linspace(1.0, 5.0, N)) @ Q.T


def quartic_hessian():
    w = tf.Variable(np.linspace(0.5, 1.5, N))
    return thl.Hessian(lambda w: tf.reduce_sum(w**4) + tf.reduce_sum(w[1:] * w[:-1]), w)


OPERATORS = {
    "ndarray": dense_matrix,
    "LinearOperator": lambda: sla.aslinearoperator(dense_matrix()),
    "Hessian": quartic_hessian,
}


def nan_vector():
    v = np.ones(N)
    v[4] = np.nan
    return v


# ------------------------------------------------------------------ tol, maxiter


@pytest.mark.parametrize("function", [thl.eigsh, thl.svds])
@pytest.mark.parametrize(
    ("tol", "error", "text"),
    [
        (-1, ValueError, "`tol` must be a finite non-negative number, got -1.0"),
        (np.nan, ValueError, "`tol` must be a finite non-negative number, got nan"),
        (np.inf, ValueError, "`tol` must be a finite non-negative number, got inf"),
        ("a", TypeError, "`tol` must be a real number, got 'a'"),
    ],
)
def test_lanczos_solvers_refuse_bad_tol(function, tol, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        function(dense_matrix(), k=2, tol=tol)


@pytest.mark.parametrize("function", [thl.eigsh, thl.svds, thl.lobpcg])
@pytest.mark.parametrize(
    ("maxiter", "error"), [("a", TypeError), (0, ValueError), (2.5, TypeError)]
)
def test_maxiter_is_named(function, maxiter, error):
    with pytest.raises(error, match="`maxiter` must be an integer"):
        function(dense_matrix(), k=1, maxiter=maxiter)


@pytest.mark.parametrize(("tol", "error"), [(-1e-3, ValueError), ("a", TypeError)])
def test_lobpcg_refuses_bad_tol(tol, error):
    with pytest.raises(error, match="`tol`"):
        thl.lobpcg(dense_matrix(), k=1, tol=tol)


def test_valid_tolerances_still_work():
    A = dense_matrix()
    assert np.allclose(thl.eigsh(A, k=1, which="LA", tol=0, maxiter=100)[0], [5.0])
    assert np.allclose(thl.svds(A, k=1, tol=1e-12)[1], [5.0])


@pytest.mark.parametrize("operator", OPERATORS)
def test_lobpcg_names_non_finite_x(operator):
    X = np.ones((N, 1))
    X[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"`X` must be finite, got inf at index \(2, 0\)"):
        thl.lobpcg(OPERATORS[operator](), k=1, X=X)


@pytest.mark.parametrize(
    ("shift", "error", "text"),
    [
        (np.nan, ValueError, "`shift` must be a finite real number, got nan"),
        (np.inf, ValueError, "`shift` must be a finite real number, got inf"),
        ("1", TypeError, "`shift` must be a real number, got '1'"),
        (1j, TypeError, "`shift` must be a real number, got 1j"),
    ],
)
def test_minres_checks_shift(shift, error, text):
    with pytest.raises(error, match=text):
        thl.minres(dense_matrix(), np.ones(N), shift=shift)


def test_minres_negative_shift_is_accepted():
    A = dense_matrix()
    x, info = thl.minres(A, np.ones(N), shift=-1.0, rtol=1e-12)
    assert info == 0
    assert np.allclose((A + np.eye(N)) @ x, np.ones(N))


# ------------------------------------------------------------ non-finite vectors


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda A, v: thl.power_iteration(A, v0=v), "v0"),
        (lambda A, v: thl.eigsh(A, k=1, v0=v), "v0"),
        (lambda A, v: thl.svds(A, k=1, v0=v), "v0"),
        (lambda A, v: thl.cg(A, v), "b"),
        (lambda A, v: thl.minres(A, v), "b"),
        (lambda A, v: thl.pcg(A, v, rank=2, rng=0), "b"),
        (lambda A, v: thl.cg(A, np.ones(N), x0=v), "x0"),
        (lambda A, v: thl.minres(A, np.ones(N), x0=v), "x0"),
    ],
)
def test_non_finite_vectors_are_named(operator, call, name):
    A = OPERATORS[operator]()
    v = nan_vector()
    before = v.copy()
    with pytest.raises(ValueError, match=rf"`{name}` must be finite, got nan at index 4 \(1 "):
        call(A, v)
    np.testing.assert_array_equal(v, before)


def test_non_real_vectors_are_named():
    with pytest.raises(TypeError, match="`b` must be a real array, got dtype <U1"):
        thl.cg(dense_matrix(), np.array(["a"] * N))


# ------------------------------------------------------------------- rng, threads


@pytest.mark.parametrize(
    "call",
    [
        lambda A: thl.randomized_svd(A, 2, rng="a"),
        lambda A: thl.lobpcg(A, 1, rng="a"),
        lambda A: thl.power_iteration(A, rng="a"),
        lambda A: thl.pcg(A, np.ones(N), rank=2, rng="a"),
    ],
)
def test_rng_is_named(call):
    with pytest.raises(TypeError, match=r"^`rng` must be None, an int seed, .* got str\.$"):
        call(dense_matrix())


@pytest.mark.parametrize(
    ("arguments", "error", "name"),
    [
        (("two",), TypeError, "intra_op"),
        ((1, 1.5), TypeError, "inter_op"),
        ((True,), TypeError, "intra_op"),
        ((-1,), ValueError, "intra_op"),
    ],
)
def test_configure_threads_names_its_arguments(arguments, error, name):
    with pytest.raises(error, match=f"`{name}` must be a non-negative integer"):
        thl.configure_threads(*arguments)


# ----------------------------------------------------------------- compat layer


@pytest.fixture
def seed_hessian():
    def Loss(X):
        return 2 * X[0] ** 3 * X[1] ** 3 + tf.reduce_sum(X**2)

    return SeedHessian(Loss, tf.Variable([1.0, 0.5, 2.0, -1.0], dtype=tf.float64))


@pytest.mark.parametrize(
    ("arguments", "keywords", "error", "text"),
    [
        ((2.7, 2), {}, TypeError, "`k` must be an integer, got 2.7"),
        (("4", 2), {}, TypeError, "`k` must be an integer, got '4'"),
        ((0, 2), {}, ValueError, "`k` must be an integer satisfying positive, got 0"),
        ((2, 1.5), {}, TypeError, "`p` must be an integer, got 1.5"),
        ((2, -1), {}, ValueError, "`p` must be a non-negative integer, got -1"),
        ((2, 2), {"itmax": 10.0}, TypeError, "`itmax` must be an integer, got 10.0"),
        ((2, 2), {"itmax": "9"}, TypeError, "`itmax` must be an integer, got '9'"),
        ((2, 2), {"tol": -1.0}, ValueError, "`tol` must be a finite non-negative"),
    ],
)
def test_compat_pcg_names_the_seed_arguments(seed_hessian, arguments, keywords, error, text):
    with pytest.raises(error, match=text):
        seed_hessian.pCG(np.ones(4), *arguments, **keywords)


def test_compat_pcg_integers_still_work(seed_hessian):
    b = np.ones(4)
    x = seed_hessian.pCG(b, np.int64(2), 2, itmax=50, rng=0)
    assert np.allclose(seed_hessian.mat() @ x, b)


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda H: H.RandMatSVD(2.0, 1), TypeError, "`k` must be an integer"),
        (lambda H: H.RandMatSVD(2, "1"), TypeError, "`p` must be an integer"),
        (lambda H: H.eig("pi-max", itmax=3.5), TypeError, "`itmax` must be an integer"),
        (lambda H: H.eig("pi-max", tol="a"), TypeError, "`tol` must be a real number"),
        (lambda H: H.RandMatSVD(2, 1, rng="a"), TypeError, "`rng` must be None"),
    ],
)
def test_compat_algorithms_name_the_seed_arguments(seed_hessian, call, error, text):
    with pytest.raises(error, match=text):
        call(seed_hessian)


@pytest.mark.parametrize("state", ["no", "yes", 1, 0, 1.0])
def test_switch_verbose_accepts_booleans_only(seed_hessian, state):
    with pytest.raises(TypeError, match="`state` must be True, False or None"):
        seed_hessian.SwitchVerbose(state)
    assert seed_hessian.verbose is False


def test_switch_verbose_booleans_and_toggle(seed_hessian):
    seed_hessian.SwitchVerbose(np.bool_(True))
    assert seed_hessian.verbose is True
    seed_hessian.SwitchVerbose()
    assert seed_hessian.verbose is False


# ------------------------------------------------------------ NewtonCG interrupts


def interrupting(hessian, after, exception):
    """Make `hessian`'s loss evaluations raise `exception` after `after` calls."""
    original = hessian.value_and_gradient
    calls = []

    def value_and_gradient():
        calls.append(1)
        if len(calls) > after:
            raise exception
        return original()

    hessian.value_and_gradient = value_and_gradient
    return calls


@pytest.mark.parametrize(
    "exception", [KeyboardInterrupt(), SystemExit(1), RuntimeError("loss failed")]
)
@pytest.mark.parametrize("after", [1, 2, 3])
def test_newton_step_interrupted_in_line_search_restores_weights(exception, after):
    # A loss whose full Newton step overshoots, so the line search needs several
    # trials: evaluation 1 is the step's start, the later ones are trial points.
    w = tf.Variable(np.array([3.0, -2.0, 1.5]))
    hessian = thl.Hessian(lambda w: tf.reduce_sum(tf.sqrt(1.0 + w**2)), w)
    optimizer = thl.NewtonCG(hessian, cg_rtol=1e-10)
    start = w.numpy().copy()
    calls = interrupting(hessian, after, exception)
    with pytest.raises(type(exception)):
        optimizer.step()
    assert len(calls) == after + 1
    np.testing.assert_array_equal(w.numpy(), start)


def test_newton_minimize_interrupted_keeps_the_last_accepted_weights():
    w = tf.Variable(np.array([3.0, -2.0, 1.5]))
    hessian = thl.Hessian(lambda w: tf.reduce_sum(tf.sqrt(1.0 + w**2)), w)
    optimizer = thl.NewtonCG(hessian, cg_rtol=1e-10)
    optimizer.minimize(steps=1)
    accepted = w.numpy().copy()
    interrupting(hessian, 1, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        optimizer.minimize(steps=5)
    np.testing.assert_array_equal(w.numpy(), accepted)
