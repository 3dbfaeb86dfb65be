"""svds and randomized_svd against numpy.linalg.svd."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import known_spectra
import tfhess_linop as thl
from known_spectra import CUBIC_HESSIAN, CountingOperator, dense_with_spectrum, spectrum

CASES = ["clustered", "indefinite", "rank_deficient", "positive_definite"]


@pytest.fixture(scope="module")
def xor_problem():
    return known_spectra.xor_problem()


def singular_values(A):
    return np.linalg.svd(A, compute_uv=False)


def assert_singular_triplets(A, U, s, Vt, atol):
    assert np.allclose(A @ Vt.T, U * s, atol=atol)
    assert np.allclose(A.T @ U, Vt.T * s, atol=atol)
    assert np.allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-8)
    assert np.allclose(Vt @ Vt.T, np.eye(U.shape[1]), atol=1e-8)


# -------------------------------------------------------------------- svds


@pytest.mark.parametrize("case", CASES)
def test_svds_matches_numpy_sorted_like_scipy(case):
    A = dense_with_spectrum(spectrum(case))
    U, s, Vt = thl.svds(A, k=4)
    assert np.allclose(s, singular_values(A)[:4][::-1], atol=1e-9)
    assert np.all(np.diff(s) >= 0)
    assert_singular_triplets(A, U, s, Vt, atol=1e-8)
    largest = np.abs(U).argmax(axis=0)
    assert np.all(U[largest, np.arange(4)] > 0)


def test_svds_cubic_and_xor_hessians(xor_problem):
    U, s, Vt = thl.svds(CUBIC_HESSIAN, k=1)
    assert np.allclose(s, [30.0])
    A, reference = xor_problem
    U, s, Vt = thl.svds(A, k=3)
    assert np.allclose(s, singular_values(reference)[:3][::-1], rtol=1e-8)
    assert_singular_triplets(reference, U, s, Vt, atol=1e-7)


@pytest.mark.parametrize("case", ["indefinite", "positive_definite"])
def test_svds_uses_fewer_products_than_scipy_normal_equations(case):
    # SciPy's svds runs Lanczos on AᵀA: two products per step.
    A = dense_with_spectrum(spectrum(case, n=300))
    ours = CountingOperator(A)
    thl.svds(ours, k=3)
    theirs = CountingOperator(A)
    spla.svds(theirs, k=3, v0=np.ones(300), random_state=0)
    assert ours.n_products < theirs.n_products


def test_svds_return_singular_vectors_options():
    A = dense_with_spectrum(spectrum("indefinite"))
    U, s, Vt = thl.svds(A, k=2)
    only_s = thl.svds(A, k=2, return_singular_vectors=False)
    assert np.allclose(only_s, s)
    U_only, s_u, none = thl.svds(A, k=2, return_singular_vectors="u")
    none_too, s_v, Vt_only = thl.svds(A, k=2, return_singular_vectors="vh")
    assert none is None and none_too is None
    assert np.allclose(U_only, U) and np.allclose(Vt_only, Vt)
    assert np.array_equal(s_u, s) and np.array_equal(s_v, s)


def test_svds_smallest():
    values = np.r_[0.05, -0.2, np.linspace(1.0, 3.0, 28)]
    A = dense_with_spectrum(values)
    U, s, Vt = thl.svds(A, k=2, which="SM")
    assert np.allclose(s, [0.05, 0.2], atol=1e-9)
    assert_singular_triplets(A, U, s, Vt, atol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "`k` must be an integer satisfying"),
        ({"k": 60}, "`k` must be an integer satisfying"),
        ({"which": "LA"}, "`which` must be one of"),
        ({"return_singular_vectors": "x"}, "`return_singular_vectors` must be"),
    ],
)
def test_svds_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        thl.svds(dense_with_spectrum(spectrum("clustered")), **kwargs)


# ---------------------------------------------------------- randomized_svd


@pytest.mark.parametrize("method", ["subspace", "krylov"])
@pytest.mark.parametrize("case", CASES)
def test_randomized_svd_matches_numpy(case, method):
    A = dense_with_spectrum(spectrum(case))
    U, s, Vt = thl.randomized_svd(A, 4, n_iter=4, method=method, rng=0)
    reference = singular_values(A)[:4]
    assert np.all(np.diff(s) <= 0)
    # σ₅/σ₄ is 0.5 at worst ("indefinite"): (0.5)^(2·4+2) ~ 1e-3 bounds the error.
    assert np.allclose(s, reference, rtol=1e-4)
    assert np.allclose(U.T @ U, np.eye(4), atol=1e-10)
    assert np.allclose(A @ Vt.T, U * s, atol=1e-2 * reference[0])


def slowly_decaying(n=400):
    return dense_with_spectrum(
        np.r_[1.0 / np.arange(1, n // 2 + 1), -1.0 / np.arange(2, n // 2 + 2)]
    )


@pytest.mark.parametrize("method", ["subspace", "krylov"])
def test_iterations_improve_accuracy(method):
    A = slowly_decaying()
    reference = singular_values(A)[:8]

    def error(n_iter):
        errors = []
        for seed in range(3):
            _, s, _ = thl.randomized_svd(A, 8, oversample=4, n_iter=n_iter, method=method, rng=seed)
            errors.append(np.abs(s - reference).max() / reference[0])
        return np.mean(errors)

    plain, two, four = error(0), error(2), error(4)
    assert two < plain / 5
    assert four < two


def test_krylov_beats_subspace_at_equal_cost():
    A = slowly_decaying()
    reference = singular_values(A)[:8]
    errors = {}
    for method in ("subspace", "krylov"):
        _, s, _ = thl.randomized_svd(A, 8, oversample=4, n_iter=3, method=method, rng=1)
        errors[method] = np.abs(s - reference).max()
    assert errors["krylov"] < errors["subspace"] / 10


@pytest.mark.parametrize("method", ["subspace", "krylov"])
def test_one_batched_product_per_block(method):
    A = CountingOperator(dense_with_spectrum(spectrum("indefinite")))
    thl.randomized_svd(A, 3, oversample=5, n_iter=2, method=method, rng=0)
    assert A.widths == [8, 8, 8, 8]


def test_krylov_basis_larger_than_n_is_truncated_and_exact():
    # q (k + p) = 4 * 15 > n = 30: the seed's code crashed here.
    values = np.r_[np.linspace(-3.0, 3.0, 29), 7.0]
    A = CountingOperator(dense_with_spectrum(values))
    _, s, _ = thl.randomized_svd(A, 5, oversample=10, n_iter=3, method="krylov", rng=0)
    assert np.allclose(s, singular_values(A.matrix)[:5], atol=1e-10)
    assert A.n_products <= 2 * 30
    _, s, _ = thl.randomized_svd(A.matrix, 30, oversample=10, n_iter=1, rng=0)
    assert np.allclose(s, singular_values(A.matrix), atol=1e-10)


def test_rank_deficient_krylov_space():
    A = dense_with_spectrum(spectrum("rank_deficient", n=50))
    U, s, _Vt = thl.randomized_svd(A, 8, oversample=4, n_iter=5, method="krylov", rng=0)
    assert np.allclose(s, singular_values(A)[:8], atol=1e-10)
    assert np.allclose(U.T @ U, np.eye(8), atol=1e-10)


def test_randomized_svd_xor_hessian_and_reproducibility(xor_problem):
    A, reference = xor_problem
    start = A.n_hvp
    first = thl.randomized_svd(A, 4, oversample=2, n_iter=2, method="krylov", rng=3)
    # A Ω (6), A Q₀ (6, of which 3 fit in n = 9), then A Q₁ (3).
    assert A.n_hvp - start == 6 + 6 + 3
    assert np.allclose(first[1], singular_values(reference)[:4], rtol=1e-8)
    second = thl.randomized_svd(A, 4, oversample=2, n_iter=2, method="krylov", rng=3)
    assert np.array_equal(first[1], second[1])


@pytest.mark.parametrize("method", ["subspace", "krylov"])
def test_randomized_svd_of_a_tf_hessian_equals_that_of_its_dense_matrix(xor_problem, method):
    # The operator reads Fortran-ordered blocks as they are and writes the
    # products of Ω and of each subspace iterate into them; the dense
    # matrix takes the generic route. Same probes: the same result.
    A, reference = xor_problem
    got = thl.randomized_svd(A, 3, oversample=2, n_iter=2, method=method, rng=5)
    want = thl.randomized_svd(reference, 3, oversample=2, n_iter=2, method=method, rng=5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10)
    # Singular vectors up to sign.
    signs = np.sign(np.sum(got[0] * want[0], axis=0))
    np.testing.assert_allclose(got[0] * signs, want[0], atol=1e-8)
    np.testing.assert_allclose(got[2] * signs[:, None], want[2], atol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "`k` must be an integer satisfying"),
        ({"k": 61}, ValueError, "`k` must be an integer satisfying"),
        ({"k": 2, "oversample": -1}, ValueError, "`oversample` must be a non-negative"),
        ({"k": 2, "n_iter": 1.0}, TypeError, "`n_iter` must be an integer"),
        ({"k": 2, "method": "lanczos"}, ValueError, "`method` must be one of"),
    ],
)
def test_randomized_svd_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        thl.randomized_svd(dense_with_spectrum(spectrum("clustered")), **kwargs)


@pytest.mark.parametrize("method", ["subspace", "krylov"])
def test_non_finite_products_are_reported(method):
    A = np.eye(8)
    A[3, 3] = np.nan
    with pytest.raises(ValueError, match="returned non-finite values"):
        thl.randomized_svd(A, 2, oversample=1, n_iter=1, method=method, rng=0)
