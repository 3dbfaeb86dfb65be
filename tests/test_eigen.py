"""eigsh, lobpcg and power_iteration against numpy.linalg.eigh."""

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg as spla
import tensorflow as tf

import known_spectra
import tfhess_linop as thl
from known_spectra import CUBIC_HESSIAN, CountingOperator, dense_with_spectrum, spectrum

CASES = ["clustered", "indefinite", "rank_deficient", "positive_definite"]


@pytest.fixture(scope="module")
def xor_problem():
    return known_spectra.xor_problem()


@pytest.fixture(scope="module")
def cubic_operator():
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    return thl.as_linop(thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w))


def assert_eigenpairs(A, w, V, rtol=1e-8):
    assert np.allclose(A @ V, V * w, atol=rtol * np.abs(w).max())
    assert np.allclose(V.T @ V, np.eye(V.shape[1]), atol=1e-8)


# ------------------------------------------------------------------- eigsh


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_eigsh_matches_eigh(case, which):
    values = spectrum(case)
    A = dense_with_spectrum(values)
    w, V = thl.eigsh(CountingOperator(A), k=3, which=which)
    if which == "LA":
        expected = values[-3:]
    elif which == "SA":
        expected = values[:3]
    else:
        expected = np.sort(values[np.argsort(np.abs(values))[-3:]])
    assert np.allclose(w, expected, atol=1e-9)
    assert_eigenpairs(A, w, V)


def test_eigsh_cubic_loss_hessian(cubic_operator):
    assert np.allclose(thl.eigsh(cubic_operator, k=1, which="LA")[0], [30.0])
    assert np.allclose(thl.eigsh(cubic_operator, k=1, which="SA")[0], [-6.0])
    # A Hessian itself is accepted and wrapped.
    w = thl.eigsh(cubic_operator.hessian, k=1, which="SA", return_eigenvectors=False)
    assert np.allclose(w, [-6.0])


def test_eigsh_xor_hessian(xor_problem):
    A, reference = xor_problem
    expected = np.linalg.eigvalsh(reference)
    w, V = thl.eigsh(A, k=2, which="LM")
    magnitudes = np.sort(np.abs(expected))[-2:]
    assert np.allclose(np.sort(np.abs(w)), magnitudes, rtol=1e-8)
    assert_eigenpairs(reference, w, V, rtol=1e-7)


def test_eigsh_is_deterministic_and_ignores_global_random_state():
    A = dense_with_spectrum(spectrum("clustered"))
    np.random.seed(1)  # noqa: NPY002 (the legacy global state must not matter)
    first = thl.eigsh(A, k=2, which="LA")
    np.random.seed(2)  # noqa: NPY002 (the legacy global state must not matter)
    second = thl.eigsh(A, k=2, which="LA")
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])


def test_eigsh_top_eigenvalue_in_few_products():
    # A Hessian-like spectrum: a few outliers above a bulk around zero.
    rng = np.random.default_rng(3)
    values = np.r_[rng.normal(0.0, 0.01, 20_000), rng.uniform(0.5, 3.0, 9), 5.0]
    operator = CountingOperator(values)
    w = thl.eigsh(operator, k=1, which="LA", return_eigenvectors=False)
    assert abs(w[0] - 5.0) <= 1e-6 * 5.0
    assert operator.n_products <= 40
    scipy_default = CountingOperator(values)
    spla.eigsh(scipy_default, k=1, which="LA", v0=np.ones(values.size))
    assert operator.n_products < scipy_default.n_products


def test_eigsh_passes_user_v0_and_ncv():
    A = dense_with_spectrum(spectrum("indefinite"))
    v0 = np.ones(60)
    saved = v0.copy()
    w, _ = thl.eigsh(A, k=2, which="SA", v0=v0, ncv=10)
    assert np.allclose(w, spectrum("indefinite")[:2])
    assert np.array_equal(v0, saved)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "`k` must be an integer satisfying"),
        ({"k": 60}, ValueError, "`k` must be an integer satisfying"),
        ({"k": 1.5}, TypeError, "`k` must be an integer"),
        ({"which": "XX"}, ValueError, "`which` must be one of"),
        ({"v0": np.ones(3)}, ValueError, r"`v0` must have shape \(60,\)"),
        ({"k": 3, "ncv": 3}, ValueError, "`ncv` must satisfy"),
        ({"ncv": 61}, ValueError, "`ncv` must be an integer satisfying"),
    ],
)
def test_eigsh_rejects_bad_arguments(kwargs, error, match):
    A = dense_with_spectrum(spectrum("clustered"))
    with pytest.raises(error, match=match):
        thl.eigsh(A, **kwargs)


def test_eigsh_rejects_non_square_operator():
    with pytest.raises(ValueError, match=r"`A` must be square, got shape \(3, 4\)"):
        thl.eigsh(np.ones((3, 4)), k=1)


# ------------------------------------------------------------------ lobpcg


@pytest.mark.parametrize("largest", [True, False])
def test_lobpcg_matches_eigh_with_block_products(largest):
    values = np.r_[np.linspace(1.0, 2.0, 194), 10.0, 11.0, 12.0, -13.0, -14.0, -15.0]
    A = dense_with_spectrum(np.sort(values))
    operator = CountingOperator(A)
    w, V = thl.lobpcg(operator, k=3, largest=largest, rng=0, tol=1e-10, maxiter=200)
    expected = np.sort(values)[-3:] if largest else np.sort(values)[:3]
    assert np.allclose(w, expected, atol=1e-7)
    assert_eigenpairs(A, w, V, rtol=1e-6)
    # Blocks: the active columns shrink as eigenpairs converge and lock.
    assert operator.widths[0] == 3
    assert len(operator.widths) < operator.n_products / 2


def test_lobpcg_small_problem_uses_dense_eigh_without_warning(xor_problem):
    A, reference = xor_problem
    start = A.n_hvp
    w, V = thl.lobpcg(A, k=2, rng=0)
    assert np.allclose(w, np.linalg.eigvalsh(reference)[-2:], atol=1e-10)
    assert_eigenpairs(reference, w, V, rtol=1e-7)
    assert A.n_hvp - start == 9


def test_lobpcg_is_reproducible_with_rng():
    A = dense_with_spectrum(np.r_[np.linspace(0.0, 1.0, 97), 5.0, 6.0, 7.0])
    first = thl.lobpcg(A, k=2, rng=5, tol=1e-10, maxiter=100)
    second = thl.lobpcg(A, k=2, rng=5, tol=1e-10, maxiter=100)
    assert np.array_equal(first[1], second[1])


# Spectra on which LOBPCG converges in tens of iterations, so that rounding
# does not decide when a pair locks.
LOBPCG_SPECTRA = {
    "separated": np.r_[np.linspace(0.0, 1.0, 292), 2.0, 2.5, 3.0, 4.0, 6.0, 6.5, 8.0, 9.0],
    "indefinite": np.r_[
        np.linspace(-1.0, 1.0, 290), -6.0, -5.0, -4.5, -4.0, -3.0, 3.0, 4.0, 4.5, 5.0, 6.0
    ],
    "graded": np.r_[np.linspace(1.0, 2.0, 292), np.logspace(0.5, 3.0, 8)],
}


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize(
    ("case", "largest"),
    [("separated", True), ("indefinite", True), ("indefinite", False), ("graded", True)],
)
def test_lobpcg_takes_scipys_iterations(case, largest, k):
    # The package's own LOBPCG runs SciPy's iteration: the same blocks of
    # products, iteration by iteration, and the same eigenpairs.
    values = np.sort(LOBPCG_SPECTRA[case])
    A = dense_with_spectrum(values)
    X = np.random.default_rng(1).standard_normal((300, k))
    ours, scipys = CountingOperator(A), CountingOperator(A)
    w, V = thl.lobpcg(ours, k, X=X, tol=1e-8, maxiter=500, largest=largest)
    w_scipy = np.sort(spla.lobpcg(scipys, X, tol=1e-8, maxiter=500, largest=largest)[0])
    assert ours.widths == scipys.widths
    expected = values[-k:] if largest else values[:k]
    assert np.allclose(w, expected, rtol=1e-12)
    assert np.allclose(w, w_scipy, rtol=1e-12)
    assert_eigenpairs(A, w, V, rtol=1e-7)


def jacobi_problem(n=400):
    """A diagonally dominant matrix with a wide diagonal, and its inverse diagonal."""
    rng = np.random.default_rng(3)
    coupling = rng.standard_normal((n, n)) * (rng.uniform(size=(n, n)) < 0.01)
    A = np.diag(np.logspace(0, 4, n)) + 0.05 * (coupling + coupling.T)
    return A, 1.0 / np.diag(A)


@pytest.mark.parametrize("as_matrix", [False, True], ids=["callable", "matrix"])
def test_lobpcg_preconditioner_as_scipy(as_matrix):
    A, inverse_diagonal = jacobi_problem()
    M = np.diag(inverse_diagonal) if as_matrix else (lambda R: inverse_diagonal[:, None] * R)
    X = np.random.default_rng(2).standard_normal((400, 3))
    ours, scipys, plain = CountingOperator(A), CountingOperator(A), CountingOperator(A)
    w, V = thl.lobpcg(ours, 3, X=X, M=M, tol=1e-8, maxiter=300, largest=False)
    spla.lobpcg(scipys, X, M=M, tol=1e-8, maxiter=300, largest=False)
    with pytest.warns(UserWarning, match="not reaching the requested tolerance"):
        thl.lobpcg(plain, 3, X=X, tol=1e-8, maxiter=300, largest=False)
    assert ours.widths == scipys.widths
    # The preconditioner is applied: it needs far fewer products.
    assert ours.n_products < plain.n_products / 3
    assert np.allclose(w, np.linalg.eigvalsh(A)[:3], atol=1e-9)
    assert_eigenpairs(A, w, V, rtol=1e-7)


def test_lobpcg_goes_on_where_the_preconditioned_residuals_are_rank_deficient():
    # A preconditioner that returns the same vector for every residual:
    # SciPy's Cholesky of the block fails and it stops at iteration 0; the
    # package completes the block by Householder QR and converges.
    values = np.sort(LOBPCG_SPECTRA["indefinite"])
    A = dense_with_spectrum(values)
    X = np.random.default_rng(1).standard_normal((300, 3))

    def M(R):
        return np.repeat(R[:, :1], R.shape[1], axis=1)

    with pytest.warns(UserWarning) as record:
        w_scipy, _ = spla.lobpcg(A, X, M=M, tol=1e-8, maxiter=300)
    assert str(record[0].message).startswith("Failed at iteration 0")
    assert not np.allclose(np.sort(w_scipy), values[-3:], rtol=1e-2)
    w, V = thl.lobpcg(A, 3, X=X, M=M, tol=1e-8, maxiter=300)
    assert np.allclose(w, values[-3:], rtol=1e-12)
    assert_eigenpairs(A, w, V, rtol=1e-7)


def test_lobpcg_warns_as_scipy_and_returns_the_best_iterate():
    A = dense_with_spectrum(spectrum("clustered", n=300))
    X = np.random.default_rng(4).standard_normal((300, 2))
    with pytest.warns(UserWarning, match="not reaching the requested tolerance") as ours:
        w, _ = thl.lobpcg(A, 2, X=X, tol=1e-12, maxiter=3)
    with pytest.warns(UserWarning, match="not reaching the requested tolerance") as scipys:
        w_scipy, _ = spla.lobpcg(A, X, tol=1e-12, maxiter=3)
    assert [str(m.message).split()[:2] for m in ours] == [
        str(m.message).split()[:2] for m in scipys
    ]
    # The warning points at the caller, not at the package.
    assert all(m.filename == __file__ for m in ours)
    assert np.allclose(w, np.sort(w_scipy), rtol=1e-10)


def test_lobpcg_generalized_and_constrained_problems_use_scipy():
    values = spectrum("positive_definite", n=200)
    A = dense_with_spectrum(values)
    B = np.diag(np.linspace(1.0, 2.0, 200))
    w, V = thl.lobpcg(A, 2, B=B, rng=0, tol=1e-9, maxiter=500)
    assert np.allclose(w, scipy.linalg.eigh(A, B, eigvals_only=True)[-2:], rtol=1e-8)
    assert np.allclose(A @ V, B @ V * w, atol=1e-6 * values.max())
    # Constrained to the complement of the top eigenvector: the next two.
    top = np.linalg.eigh(A)[1][:, -1:]
    w, V = thl.lobpcg(A, 2, Y=top, rng=0, tol=1e-9, maxiter=500)
    assert np.allclose(w, values[-3:-1], rtol=1e-8)
    assert np.allclose(top.T @ V, 0.0, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "`k` must be an integer satisfying"),
        ({"X": np.ones((5, 2))}, "`X` must have shape"),
    ],
)
def test_lobpcg_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        thl.lobpcg(np.eye(50), **kwargs)


# --------------------------------------------------------- power_iteration


def test_power_iteration_cubic_loss(cubic_operator):
    for which, expected in [("LM", 30.0), ("LA", 30.0), ("SA", -6.0)]:
        lam, v, info = thl.power_iteration(cubic_operator, which=which, tol=1e-10, rng=0)
        assert info == 0
        assert lam == pytest.approx(expected, rel=1e-9)
        assert np.allclose(CUBIC_HESSIAN @ v, lam * v, atol=1e-8)


@pytest.mark.parametrize(
    ("case", "which"),
    [
        ("clustered", "LA"),
        ("indefinite", "LA"),
        ("indefinite", "SA"),
        ("rank_deficient", "LA"),
        ("rank_deficient", "SA"),
        ("positive_definite", "LA"),
        ("isolated_bottom", "SA"),
    ],
)
def test_power_iteration_algebraic_ends(case, which):
    # Power iteration converges like the ratio of the two eigenvalues nearest
    # the wanted end, measured from the other end: cases with a gap there.
    if case == "isolated_bottom":
        values = np.r_[0.1, np.linspace(1.0, 3.0, 59)]
    else:
        values = spectrum(case)
    A = dense_with_spectrum(values)
    lam, v, info = thl.power_iteration(A, which=which, tol=1e-9, maxiter=20_000, rng=1)
    expected = values[-1] if which == "LA" else values[0]
    assert info == 0
    assert lam == pytest.approx(expected, abs=1e-6 * np.abs(values).max())
    assert np.linalg.norm(v) == pytest.approx(1.0)


def test_power_iteration_stops_on_the_residual():
    # Nearly equal top eigenvalues: λ settles long before the vector does.
    values = np.r_[np.linspace(0.0, 0.5, 38), 0.99, 1.0]
    A = dense_with_spectrum(values)
    tol = 1e-8
    lam, v, info = thl.power_iteration(A, tol=tol, maxiter=50_000, rng=2)
    assert info == 0
    assert np.linalg.norm(A @ v - lam * v) <= tol * abs(lam)
    top = np.linalg.eigh(A)[1][:, -1]
    assert abs(abs(top @ v) - 1.0) < 1e-10


def test_power_iteration_reports_non_convergence():
    # ±1: no dominant eigenvalue, the "LM" iteration cannot converge.
    A = dense_with_spectrum(np.r_[-1.0, np.linspace(-0.5, 0.5, 8), 1.0])
    _, _, info = thl.power_iteration(A, tol=1e-10, maxiter=50, rng=0)
    assert info == 50
    lam, _, info = thl.power_iteration(A, which="LA", tol=1e-8, maxiter=5000, rng=0)
    assert info == 0
    assert lam == pytest.approx(1.0, abs=1e-6)


def test_power_iteration_does_not_mutate_v0_and_is_reproducible():
    A = dense_with_spectrum(spectrum("indefinite"))
    v0 = np.linspace(1.0, 2.0, 60)
    saved = v0.copy()
    result = thl.power_iteration(A, which="SA", v0=v0, tol=1e-9, maxiter=10_000)
    assert np.array_equal(v0, saved)
    assert result[0] == pytest.approx(-12.0)
    first = thl.power_iteration(A, rng=3)
    second = thl.power_iteration(A, rng=3)
    assert first[0] == second[0]
    assert np.array_equal(first[1], second[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"which": "BE"}, ValueError, "`which` must be one of"),
        ({"tol": -1.0}, ValueError, "`tol` must be a finite non-negative number"),
        ({"maxiter": 0}, ValueError, "`maxiter` must be an integer satisfying"),
        ({"v0": np.zeros(2)}, ValueError, "`v0` must be a nonzero vector"),
        ({"v0": np.ones(3)}, ValueError, r"`v0` must have shape \(2,\)"),
    ],
)
def test_power_iteration_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        thl.power_iteration(CUBIC_HESSIAN, **kwargs)
