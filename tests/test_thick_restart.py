"""eigsh's thick-restart Lanczos solver against numpy.linalg.eigh and ARPACK."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import tensorflow as tf
from scipy.sparse.linalg import LinearOperator

import tfhess_linop as thl
from conftest import dense_reference, mlp
from known_spectra import CountingOperator, dense_with_spectrum, spectrum
from tfhess_linop._thick_restart import products_bound


def expected(values, which, k):
    """The `k` eigenvalues at end `which` of the sorted `values`, ascending."""
    if which == "LA":
        return values[-k:]
    if which == "SA":
        return values[:k]
    if which == "LM":
        return np.sort(values[np.argsort(np.abs(values), kind="stable")[-k:]])
    high = (k + 1) // 2  # BE: one more from the high end when k is odd
    return np.r_[values[: k - high], values[-high:]]


def assert_eigenpairs(A, values, w, V, which, k):
    scale = np.abs(values).max()
    assert w.shape == (k,) and V.shape == (A.shape[0], k)
    assert np.all(np.diff(w) >= 0)
    assert np.allclose(w, expected(values, which, k), rtol=0, atol=1e-10 * scale)
    assert np.linalg.norm(A @ V - V * w, axis=0).max() <= 1e-9 * scale
    assert np.abs(V.T @ V - np.eye(k)).max() <= 1e-12


def repeated(n):
    """Eigenvalues 3 (five times), 2 (five times) and 1: a Krylov space from
    one vector holds each only once."""
    return np.sort(np.r_[np.full(5, 3.0), np.full(5, 2.0), np.ones(n - 10)])


SPECTRA = {
    "clustered": lambda n: spectrum("clustered", n),
    "indefinite": lambda n: spectrum("indefinite", n),
    "repeated": repeated,
    "positive_definite": lambda n: spectrum("positive_definite", n),
}


@pytest.mark.parametrize("case", sorted(SPECTRA))
@pytest.mark.parametrize("which", ["LA", "SA", "LM", "BE"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_eigenpairs_match_eigh(case, which, k):
    if which == "BE" and k == 1:
        pytest.skip("ARPACK's BE needs k > 1 (eigsh keeps ARPACK's error)")
    values = SPECTRA[case](120)
    A = dense_with_spectrum(values, seed=k)
    w, V = thl.eigsh(A, k=k, which=which)
    assert_eigenpairs(A, values, w, V, which, k)


@pytest.mark.parametrize("n", [2, 3, 7, 16, 17, 50, 2000])
def test_sizes_from_two_including_the_whole_space(n):
    # n <= ncv = 16 for k = 1: the Krylov space is the whole space.
    values = np.sort(np.random.default_rng(n).uniform(-1.0, 2.0, n))
    A = dense_with_spectrum(values, seed=n)
    for which in ["LA", "SA", "LM"]:
        w, V = thl.eigsh(A, k=1, which=which)
        assert_eigenpairs(A, values, w, V, which, 1)
    if n > 3:
        w, V = thl.eigsh(A, k=n - 1 if n < 8 else 6, which="BE")
        assert_eigenpairs(A, values, w, V, "BE", w.size)


def test_invariant_subspaces_are_completed_by_fresh_starts():
    # A diagonal matrix whose start vector spans a 3-dimensional invariant
    # subspace: the repeated top eigenvalue needs k start vectors.
    values = repeated(500)
    w, V = thl.eigsh(np.diag(values), k=4, which="LA")
    assert np.allclose(w, np.full(4, 3.0), rtol=0, atol=1e-14)
    assert np.linalg.norm(np.diag(values) @ V - 3.0 * V) <= 1e-12
    assert np.abs(V.T @ V - np.eye(4)).max() <= 1e-12


class Identity(LinearOperator):
    """The identity, returning its input itself: the solver must not write to it."""

    def __init__(self, n):
        super().__init__(dtype=np.float64, shape=(n, n))

    def _matvec(self, x):
        return x

    def _adjoint(self):
        return self


def test_identity_whose_product_aliases_the_basis():
    # Every step breaks down (A v = v): each vector is a fresh start.
    w, V = thl.eigsh(Identity(40), k=3, which="LA")
    assert np.allclose(w, np.ones(3), rtol=0, atol=1e-15)
    assert np.abs(V.T @ V - np.eye(3)).max() <= 1e-12


def hessian_like(n, seed):
    """A bulk around zero and a few outliers, as in trained networks."""
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0.0, 0.01, n - 10), rng.uniform(0.5, 3.0, 9), 5.0]


def heavy_tailed(n, seed):
    """A wider bulk, a negative tail and Pareto-distributed outliers."""
    rng = np.random.default_rng(seed)
    bulk = rng.normal(0.0, 0.02, n - 40)
    return np.r_[bulk, -rng.uniform(0.05, 0.3, 10), 10 * rng.pareto(2.0, 30) + 0.1]


# Products of eigsh and of ARPACK (scipy.sparse.linalg.eigsh, same v0, ncv,
# tol), measured when this test was written: (spectrum, n, which, k, tol) ->
# (thick restart, ARPACK). The test compares against a fresh ARPACK run.
PRODUCTS = {
    ("hessian_like", 10_000, "LA", 1, 0.0): (16, 17),
    ("hessian_like", 10_000, "LA", 3, 1e-6): (15, 19),
    ("hessian_like", 100_000, "LA", 1, 0.0): (18, 17),
    ("hessian_like", 100_000, "LA", 1, 1e-6): (10, 17),
    ("hessian_like", 100_000, "LA", 3, 0.0): (22, 33),
    ("hessian_like", 100_000, "LA", 6, 0.0): (25, 34),
    ("heavy_tailed", 10_000, "LA", 6, 0.0): (37, 44),
    ("heavy_tailed", 100_000, "LA", 3, 0.0): (33, 46),
    ("heavy_tailed", 100_000, "LM", 6, 1e-6): (24, 32),
    ("heavy_tailed", 100_000, "SA", 3, 1e-6): (193, 254),
}
# The one case of the 48 "LA"/"LM" ones measured (n = 1e4 and 1e5, k = 1, 3,
# 6, tol = 0 and 1e-6) where eigsh takes more products than ARPACK: one more.
ONE_MORE = ("hessian_like", 100_000, "LA", 1, 0.0)


@pytest.mark.parametrize("case", sorted(PRODUCTS))
def test_products_are_at_most_arpacks(case):
    name, n, which, k, tol = case
    values = {"hessian_like": hessian_like, "heavy_tailed": heavy_tailed}[name](n, n % 7)
    ncv = max(2 * k + 1, k + 15)
    v0 = np.random.default_rng(0).standard_normal(n)
    ours = CountingOperator(values)
    w = thl.eigsh(ours, k=k, which=which, v0=v0, ncv=ncv, tol=tol, return_eigenvectors=False)
    arpack = CountingOperator(values)
    spla.eigsh(arpack, k=k, which=which, v0=v0, ncv=ncv, tol=tol, return_eigenvectors=False)
    assert ours.n_products <= arpack.n_products + (case == ONE_MORE)
    # The same answer: Ritz residuals below tol give eigenvalues to ~tol².
    reference = expected(np.sort(values), which, k)
    assert np.allclose(w, reference, rtol=max(tol, 1e-12), atol=0)


def test_no_convergence_raises_with_the_converged_pairs():
    values = hessian_like(2000, 1)
    A = CountingOperator(values)
    with pytest.raises(spla.ArpackNoConvergence, match="No convergence") as caught:
        thl.eigsh(A, k=6, which="LA", ncv=12, maxiter=2)
    # One basis of 12 products and two restarts (as SciPy's maxiter).
    assert 12 < A.n_products <= products_bound(6, 12, 2)
    found, vectors = caught.value.eigenvalues, caught.value.eigenvectors
    assert 0 < found.size < 6 and vectors.shape == (2000, found.size)
    for value, vector in zip(found, vectors.T, strict=True):
        assert np.linalg.norm(values * vector - value * vector) <= 1e-12 * 5.0


def test_repeated_calls_are_bit_identical():
    A = dense_with_spectrum(spectrum("indefinite", 300))
    first = thl.eigsh(A, k=4, which="BE")
    second = thl.eigsh(A, k=4, which="BE")
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    values = thl.eigsh(A, k=4, which="BE", return_eigenvectors=False)
    assert np.array_equal(values, first[0])


def test_user_v0_is_not_modified_and_zero_v0_is_rejected():
    A = dense_with_spectrum(spectrum("clustered", 80))
    v0 = np.linspace(1.0, 2.0, 80)
    saved = v0.copy()
    thl.eigsh(A, k=2, which="LA", v0=v0)
    assert np.array_equal(v0, saved)
    with pytest.raises(ValueError, match="`v0` must be a nonzero vector"):
        thl.eigsh(A, k=2, which="LA", v0=np.zeros(80))


def test_non_finite_product_is_an_error():
    values = np.r_[np.linspace(0.0, 1.0, 30), np.inf]
    with pytest.raises(ValueError, match="non-finite product"):
        thl.eigsh(CountingOperator(values), k=1, which="LA")


def test_arpack_keeps_sm_and_be_with_one_eigenvalue():
    values = np.r_[-0.05, 0.2, np.linspace(1.0, 3.0, 78)]
    A = dense_with_spectrum(values)
    w = thl.eigsh(A, k=2, which="SM", return_eigenvectors=False)
    assert np.allclose(np.sort(w), [-0.05, 0.2], atol=1e-9)
    with pytest.raises(spla.ArpackError, match="BE"):
        thl.eigsh(A, k=1, which="BE")


def test_keras_hessian_against_its_dense_hessian():
    # A 3-8-2 tanh network in float64 (50 parameters, more than ncv).
    model = mlp(sizes=(3, 8, 2))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    A = thl.as_linop(thl.Hessian.from_keras(model, "mse", x, y))

    def loss():
        return tf.reduce_mean((model(tf.constant(x)) - y) ** 2)

    reference = dense_reference(loss, model.trainable_variables)
    values = np.linalg.eigvalsh(reference)
    for which, k in [("LA", 3), ("SA", 1), ("LM", 2), ("BE", 2)]:
        w, V = thl.eigsh(A, k=k, which=which)
        assert np.allclose(w, expected(values, which, k), rtol=0, atol=1e-9 * abs(values).max())
        assert np.linalg.norm(reference @ V - V * w, axis=0).max() <= 1e-8 * abs(values).max()
        assert np.abs(V.T @ V - np.eye(k)).max() <= 1e-12


# Partial reorthogonalisation (tol > 0): the basis of the last cycle is
# measured against the estimates that let the solver skip its passes.


@pytest.fixture
def last_basis(monkeypatch):
    """The solver's basis when it returns, as ``{"basis": _Basis, "rows": m}``."""
    from tfhess_linop import _thick_restart

    seen = {}
    result = _thick_restart._result

    def recording(basis, m, *args):
        seen.update(basis=basis, rows=m)
        return result(basis, m, *args)

    monkeypatch.setattr(_thick_restart, "_result", recording)
    return seen


def basis_inner_products(seen):
    """|V Vᵀ - I| of the last basis (its rows and the residual vector), measured."""
    V = seen["basis"].V[: seen["rows"] + 1]
    return np.abs(V @ V.T - np.eye(V.shape[0]))


class Float32Products(CountingOperator):
    """A dense matrix applied in float32, as a Hessian of a float32 model: its
    products are symmetric only to about 1e-7 of its norm."""

    def __init__(self, matrix):
        super().__init__(matrix)
        self.matrix32 = self.matrix.astype(np.float32)

    def _matmat(self, X):
        self.widths.append(X.shape[1])
        return (self.matrix32 @ X.astype(np.float32)).astype(np.float64)


def test_tol_zero_orthogonalises_every_step(last_basis):
    values = hessian_like(20_000, 3)
    A = CountingOperator(values)
    thl.eigsh(A, k=3, which="LA", v0=np.ones(20_000))
    assert last_basis["basis"].overlaps.passes == A.n_products


@pytest.mark.parametrize(
    ("name", "which", "k", "tol"),
    [
        ("hessian_like", "LA", 1, 1e-6),
        ("hessian_like", "LA", 6, 1e-9),
        ("heavy_tailed", "LM", 3, 1e-6),
        ("heavy_tailed", "SA", 3, 1e-4),
        ("hessian_like", "SA", 1, 1e-6),
    ],
)
def test_partial_reorthogonalisation_keeps_the_basis_semi_orthogonal(
    last_basis, name, which, k, tol
):
    n = 20_000
    values = {"hessian_like": hessian_like, "heavy_tailed": heavy_tailed}[name](n, 5)
    A = CountingOperator(values)
    v0 = np.random.default_rng(0).standard_normal(n)
    w, X = thl.eigsh(A, k=k, which=which, tol=tol, v0=v0, maxiter=1000)
    overlaps = last_basis["basis"].overlaps
    # Measured when this test was written: 2 of 10, 14 of 20 (one basis,
    # none restarted), 8 of 22, 30 of 166 and 20 of 192 products.
    assert overlaps.passes < (0.8 if k == 6 else 0.4) * A.n_products
    # The estimates bound what was measured, and stay below semi-orthogonality.
    actual = basis_inner_products(last_basis)
    np.fill_diagonal(actual, 0.0)
    rows = actual.shape[0]
    estimates = np.abs(overlaps.omega[:rows, :rows])
    above_rounding = actual > 100 * overlaps.rounding
    assert np.all(actual[above_rounding] <= 2 * estimates[above_rounding])
    assert actual.max() <= 2 * np.sqrt(overlaps.noise / overlaps.ncv)
    # The answer is that of full reorthogonalisation: residuals within tol.
    assert np.allclose(w, expected(np.sort(values), which, k), rtol=max(tol, 1e-12), atol=0)
    residuals = np.linalg.norm(values[:, None] * X - X * w, axis=0)
    assert np.all(residuals <= tol * np.abs(w))
    assert np.abs(X.T @ X - np.eye(k)).max() <= 1e-12


def test_float32_products_raise_the_noise_level(last_basis):
    # Every step of a float32 operator puts inner products of ~1e-9 into the
    # new vector: the first measured pass raises the model's noise to that.
    n = 2000
    values = hessian_like(n, 1)
    A = Float32Products(dense_with_spectrum(values, seed=2))
    v0 = np.random.default_rng(0).standard_normal(n)
    w, X = thl.eigsh(A, k=3, which="LA", tol=1e-6, v0=v0)
    overlaps = last_basis["basis"].overlaps
    assert overlaps.noise > 1e3 * overlaps.rounding
    assert overlaps.passes < A.n_products
    assert basis_inner_products(last_basis).max() <= 2 * np.sqrt(overlaps.noise / overlaps.ncv)
    # The same eigenpairs as ARPACK on the same products, residuals within tol.
    reference = spla.eigsh(Float32Products(A.matrix), k=3, which="LA", tol=1e-6, v0=v0)[0]
    assert np.allclose(w, reference, rtol=1e-6, atol=0)
    assert np.allclose(w, np.sort(values)[-3:], rtol=1e-6, atol=0)
    residuals = np.linalg.norm(A.matrix @ X - X * w, axis=0)
    assert np.all(residuals <= 1e-6 * np.abs(w))
    assert np.abs(X.T @ X - np.eye(3)).max() <= 1e-12


def test_a_cluster_of_eigenvectors_is_returned_orthonormal():
    # Ritz vectors of a semi-orthogonal basis are orthonormalised (Löwdin's),
    # which moves a residual by at most the size of the residuals.
    values = np.sort(np.r_[10.0, 10.0 - 1e-7, 10.0 - 2e-7, np.linspace(0.0, 5.0, 1997)])
    A = dense_with_spectrum(values, seed=4)
    w, X = thl.eigsh(A, k=3, which="LA", tol=1e-8)
    assert np.abs(X.T @ X - np.eye(3)).max() <= 1e-13
    assert np.linalg.norm(A @ X - X * w, axis=0).max() <= 1e-8 * 10.0
    assert np.allclose(w, values[-3:], rtol=1e-12, atol=0)
