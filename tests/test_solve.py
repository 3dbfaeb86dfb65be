"""cg, minres and pcg against numpy.linalg.solve and SciPy's solvers."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import tensorflow as tf

import known_spectra
import tfhess_linop as thl
from known_spectra import CUBIC_HESSIAN, CountingOperator, dense_with_spectrum, spectrum
from tfhess_linop.solve import NEGATIVE_CURVATURE_INFO, nystrom_preconditioner

SOLVERS = [thl.cg, thl.minres]
DEFINITE = [
    np.r_[np.logspace(1, 4, 6), np.linspace(1.0, 3.0, 54)],
    np.linspace(0.5, 2.0, 40),
    np.r_[1e-2, np.linspace(1.0, 2.0, 29)],
]
INDEFINITE = [
    spectrum("indefinite"),
    np.r_[-1e-3, np.linspace(1.0, 2.0, 29)],
    np.r_[np.linspace(-2.0, -1.0, 20), np.linspace(1.0, 2.0, 20)],
]


@pytest.fixture(scope="module")
def xor_problem():
    return known_spectra.xor_problem()


def right_hand_side(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n)


def assert_certificate(A, certificate):
    d = certificate.direction
    assert certificate.curvature <= 0
    assert d @ A @ d / (d @ d) == pytest.approx(certificate.curvature, abs=1e-8 * np.abs(A).max())


# ------------------------------------------------------------ both solvers


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("values", DEFINITE, ids=["outliers", "well", "small"])
def test_positive_definite_solve_matches_numpy(solver, values):
    A = CountingOperator(dense_with_spectrum(values))
    b = right_hand_side(len(values))
    result = solver(A, b, rtol=1e-10)
    x, info = result
    assert info == 0
    assert result.negative_curvature is None
    assert np.allclose(x, np.linalg.solve(A.matrix, b), rtol=1e-7, atol=1e-9)
    assert result.n_matvec == A.n_products
    assert result.residual_norm <= 1e-10 * np.linalg.norm(b) * 1.0001
    assert np.linalg.norm(A.matrix @ x - b) <= 1e-8 * np.linalg.norm(b)


@pytest.mark.parametrize("solver", SOLVERS)
def test_maxiter_one_gives_one_callback_and_info_one(solver):
    A = dense_with_spectrum(DEFINITE[0])
    b = right_hand_side(60)
    calls = []
    result = solver(A, b, maxiter=1, callback=calls.append)
    assert len(calls) == 1
    assert result.info == 1
    assert result.n_iter == 1
    scipy_solver = spla.cg if solver is thl.cg else spla.minres
    x_scipy, info_scipy = scipy_solver(A, b, maxiter=1)
    assert info_scipy == 1
    assert np.allclose(result.x, x_scipy)


@pytest.mark.parametrize("solver", SOLVERS)
def test_iterates_match_scipy(solver):
    A = dense_with_spectrum(DEFINITE[1])
    b = right_hand_side(40)
    ours, theirs = [], []
    solver(A, b, rtol=1e-8, callback=ours.append)
    scipy_solver = spla.cg if solver is thl.cg else spla.minres
    scipy_solver(A, b, rtol=1e-8, callback=lambda xk: theirs.append(xk.copy()))
    for mine, scipys in zip(ours[:10], theirs[:10], strict=True):
        assert np.allclose(mine, scipys, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_inputs_are_not_mutated_and_x0_is_used(solver):
    A = dense_with_spectrum(DEFINITE[1])
    b = right_hand_side(40)
    exact = np.linalg.solve(A, b)
    x0 = exact + 1e-3 * right_hand_side(40, seed=1)
    saved_b, saved_x0 = b.copy(), x0.copy()
    calls = []
    x, info = solver(A, b.reshape(-1, 1), x0=x0, rtol=1e-10, callback=calls.append)
    assert info == 0
    assert np.array_equal(b, saved_b) and np.array_equal(x0, saved_x0)
    assert np.allclose(x, exact)
    cold = []
    solver(A, b, rtol=1e-10, callback=cold.append)
    assert len(calls) < len(cold)


@pytest.mark.parametrize("solver", SOLVERS)
def test_zero_right_hand_side(solver):
    result = solver(np.eye(3), np.zeros(3))
    assert result.info == 0 and np.array_equal(result.x, np.zeros(3))
    assert result.n_matvec == 0


@pytest.mark.parametrize("solver", [thl.cg, thl.minres, thl.pcg])
@pytest.mark.parametrize("values", DEFINITE, ids=["outliers", "well", "small"])
def test_no_negative_curvature_on_positive_definite(solver, values):
    A = dense_with_spectrum(values)
    for seed in range(3):
        result = solver(A, right_hand_side(len(values), seed), rtol=1e-12)
        assert result.negative_curvature is None
        assert result.info != NEGATIVE_CURVATURE_INFO


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"b": np.ones(3)}, ValueError, r"`b` must have shape \(4,\) or \(4, 1\)"),
        ({"x0": np.ones(5)}, ValueError, r"`x0` must have shape \(4,\)"),
        ({"rtol": -1.0}, ValueError, "`rtol` must be a finite non-negative number"),
        ({"maxiter": 0}, ValueError, "`maxiter` must be an integer satisfying"),
        ({"M": np.eye(3)}, ValueError, r"`M` must have shape \(4, 4\)"),
        ({"A": np.ones((4, 3))}, ValueError, "`A` must be square"),
        ({"A": "matrix"}, TypeError, r"`A` must be a LinearOperator \(e\.g\. tfhess_linop"),
    ],
)
@pytest.mark.parametrize("solver", SOLVERS)
def test_bad_arguments_raise(solver, kwargs, error, match):
    arguments = {"A": np.eye(4), "b": np.ones(4)} | kwargs
    with pytest.raises(error, match=match):
        solver(arguments.pop("A"), arguments.pop("b"), **arguments)


# ---------------------------------------------------------------------- cg


@pytest.mark.parametrize("values", INDEFINITE, ids=["indefinite", "slightly", "symmetric"])
def test_cg_stops_on_negative_curvature(values):
    A = CountingOperator(dense_with_spectrum(values))
    b = right_hand_side(len(values))
    iterates = []
    result = thl.cg(A, b, callback=iterates.append)
    assert result.info == NEGATIVE_CURVATURE_INFO == -2
    assert_certificate(A.matrix, result.negative_curvature)
    assert result.negative_curvature.iteration == len(iterates) == result.n_iter
    assert np.array_equal(result.x, iterates[-1] if iterates else np.zeros(len(values)))
    assert result.n_matvec == A.n_products


def test_cg_cubic_loss_hessian():
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    A = thl.as_linop(thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w))
    result = thl.cg(A, np.array([1.0, -1.0]))
    assert result.info == -2
    assert result.negative_curvature.curvature == pytest.approx(-6.0)
    assert np.array_equal(result.x, np.zeros(2))
    x, info = thl.cg(A, np.array([1.0, 1.0]), rtol=1e-12)
    assert info == 0 and np.allclose(x, np.linalg.solve(CUBIC_HESSIAN, [1.0, 1.0]))


def test_cg_with_identity_preconditioner_is_plain_cg():
    A = dense_with_spectrum(DEFINITE[0])
    b = right_hand_side(60)
    plain = thl.cg(A, b, rtol=1e-10)
    preconditioned = thl.cg(A, b, rtol=1e-10, M=np.eye(60))
    assert np.allclose(plain.x, preconditioned.x, rtol=1e-12)
    assert plain.n_iter == preconditioned.n_iter


def test_result_unpacks_like_scipy():
    result = thl.cg(np.eye(2), np.ones(2))
    assert isinstance(result, thl.SolveResult)
    x, info = result
    assert info == 0 and np.allclose(x, 1.0)
    assert len(result) == 2 and result[0] is x and result[1] == info
    assert result.residual_norm == 0.0


# ------------------------------------------------------------------ minres


@pytest.mark.parametrize("values", INDEFINITE, ids=["indefinite", "slightly", "symmetric"])
def test_minres_solves_indefinite_and_reports_certificate(values):
    A = dense_with_spectrum(values)
    b = right_hand_side(len(values))
    result = thl.minres(A, b, rtol=1e-10)
    assert result.info == 0
    assert np.allclose(result.x, np.linalg.solve(A, b), rtol=1e-6, atol=1e-8)
    assert_certificate(A, result.negative_curvature)
    # It is where CG stops.
    assert result.negative_curvature.iteration == thl.cg(A, b).negative_curvature.iteration


def test_minres_shift_and_xor_hessian(xor_problem):
    A = dense_with_spectrum(DEFINITE[1])
    b = right_hand_side(40)
    shifted = A - 0.9 * np.eye(40)
    result = thl.minres(A, b, shift=0.9, rtol=1e-10)
    assert np.allclose(result.x, np.linalg.solve(shifted, b), rtol=1e-6)
    assert_certificate(shifted, result.negative_curvature)
    operator, reference = xor_problem
    b = reference @ right_hand_side(9)  # consistent: the XOR Hessian is nearly singular
    result = thl.minres(operator, b, rtol=1e-10)
    assert np.linalg.norm(reference @ result.x - b) <= 1e-8 * np.linalg.norm(b)
    assert_certificate(reference, result.negative_curvature)


def test_minres_least_squares_on_singular_inconsistent_system():
    A = dense_with_spectrum(spectrum("rank_deficient", n=30))
    b = right_hand_side(30)
    result = thl.minres(A, b, rtol=1e-8)
    assert result.info == 0
    assert result.n_iter < 30
    least_residual = np.linalg.norm(A @ np.linalg.pinv(A) @ b - b)
    assert np.linalg.norm(A @ result.x - b) == pytest.approx(least_residual, rel=1e-6)
    assert result.residual_norm == pytest.approx(least_residual, rel=1e-6)


# --------------------------------------------------------------------- pcg


def ill_conditioned(n=400):
    return dense_with_spectrum(np.r_[np.logspace(2, 6, 15), np.linspace(1.0, 3.0, n - 15)])


def test_pcg_cuts_iterations_on_ill_conditioned_problem():
    A = ill_conditioned()
    b = right_hand_side(400)
    plain = thl.cg(A, b, rtol=1e-10)
    counted = CountingOperator(A)
    result = thl.pcg(counted, b, rank=15, oversample=10, rtol=1e-10, rng=0)
    assert result.info == 0
    assert np.allclose(result.x, np.linalg.solve(A, b), rtol=1e-7)
    assert result.n_iter < plain.n_iter / 3
    assert result.n_matvec == counted.n_products < plain.n_matvec
    assert counted.widths[0] == 25


@pytest.mark.parametrize("values", INDEFINITE, ids=["indefinite", "slightly", "symmetric"])
def test_pcg_reports_negative_curvature(values):
    A = dense_with_spectrum(values)
    result = thl.pcg(A, right_hand_side(len(values)), rank=4, oversample=4, rng=0)
    assert result.info == -2
    assert_certificate(A, result.negative_curvature)


def test_pcg_seed_call_on_xor_hessian(xor_problem):
    # The seed's pCG(b, 4, 2): rank 4, oversampling 2, on an indefinite Hessian.
    A, reference = xor_problem
    b = np.ones(9)
    result = thl.pcg(A, b.reshape(9, 1), rank=4, oversample=2, rng=0)
    if np.linalg.eigvalsh(reference)[0] < -1e-8:
        assert result.negative_curvature is not None
        assert_certificate(reference, result.negative_curvature)
    assert np.array_equal(b, np.ones(9))


@pytest.mark.parametrize("values", DEFINITE[:1] + INDEFINITE + [spectrum("rank_deficient")])
def test_nystrom_preconditioner_is_symmetric_positive_definite(values):
    A = dense_with_spectrum(values)
    P = nystrom_preconditioner(A, 5, oversample=5, rng=0) @ np.eye(len(values))
    assert np.allclose(P, P.T, atol=1e-12)
    assert np.linalg.eigvalsh(P).min() > 0
    assert thl.dottest(nystrom_preconditioner(A, 5, rng=1), rng=0)


def test_nystrom_preconditioner_clusters_the_captured_spectrum():
    A = ill_conditioned(200)
    P = nystrom_preconditioner(A, 15, oversample=10, rng=0)
    w = np.linalg.eigvals(P @ A).real
    assert w.max() / w.min() < 10
    assert np.linalg.cond(A) > 1e5


def test_nystrom_preconditioner_recovers_a_low_rank_indefinite_operator():
    # With a sketch wider than the rank, the Nystrom approximation is the
    # operator itself: U diag(eigenvalues) U^T = A, signs and a 1e9 spread of
    # magnitudes included (the sketch's QR sees that conditioning).
    rng = np.random.default_rng(4)
    V = np.linalg.qr(rng.standard_normal((300, 6)))[0]
    values = np.array([1e3, -20.0, 3.0, -0.5, 1e-3, -1e-6])
    A = (V * values) @ V.T
    P = nystrom_preconditioner(A, 6, oversample=4, rng=0)
    np.testing.assert_allclose(np.sort(P.eigenvalues), np.sort(values), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose((P.U * P.eigenvalues) @ P.U.T, A, rtol=0, atol=1e-10)
    np.testing.assert_allclose(P.U.T @ P.U, np.eye(6), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rank": 0}, ValueError, "`rank` must be an integer satisfying"),
        ({"rank": 61}, ValueError, "`rank` must be an integer satisfying"),
        ({"oversample": -2}, ValueError, "`oversample` must be a non-negative"),
        ({"shift": -1.0}, ValueError, "`shift` must be a finite non-negative"),
        ({"b": np.ones(5)}, ValueError, r"`b` must have shape \(60,\)"),
    ],
)
def test_pcg_bad_arguments_raise(kwargs, error, match):
    arguments = {"b": np.ones(60), "rank": 5} | kwargs
    with pytest.raises(error, match=match):
        thl.pcg(dense_with_spectrum(DEFINITE[0]), **arguments)
