"""Trace, diagonal and spectral-density estimators against dense references.

The references are numpy.linalg on matrices with known spectra and on small
TensorFlow Hessians built by nested tapes (``conftest.dense_reference``).
Statistical checks use fixed seeds and tolerances several standard
deviations wide.
"""

import functools
import json
import math
import pickle
import re
import sys

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from scipy.stats import wasserstein_distance

import tfhess_linop as thl
from conftest import dense_reference, mlp, mse_mean
from tfhess_linop.estimators import DiagonalEstimate, SpectralDensity, TraceEstimate

TRACE_ESTIMATORS = [thl.hutchinson_trace, thl.hutchpp_trace, thl.xtrace]
DIAGONAL_ESTIMATORS = [thl.hutchinson_diagonal, thl.xdiag]


def with_spectrum(eigenvalues, seed=0):
    """Symmetric matrix ``U diag(eigenvalues) U^T`` with a random orthogonal U."""
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((eigenvalues.size, eigenvalues.size)))
    return (U * eigenvalues) @ U.T


class CountingOperator(spla.LinearOperator):
    """A dense matrix that records every product it is asked for."""

    def __init__(self, matrix, comm=None):
        super().__init__(dtype=np.float64, shape=matrix.shape)
        self.matrix = matrix
        self.comm = comm
        self.matmat_columns = []
        self.matvec_calls = 0

    def _matvec(self, x):
        self.matvec_calls += 1
        return self.matrix @ x

    def _matmat(self, X):
        self.matmat_columns.append(X.shape[1])
        return self.matrix @ X

    def _adjoint(self):
        return self


def relative_rms_errors(estimator, A, num_matvecs, truth, seeds):
    errors = [estimator(A, num_matvecs, rng=seed)[0] - truth for seed in seeds]
    return np.sqrt(np.mean(np.square(errors))) / abs(truth)


# --- exact diagonal ---------------------------------------------------------


@pytest.mark.parametrize("block_size", [None, 1, 7, 40])
def test_exact_diagonal_equals_numpy_diagonal(block_size):
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((40, 40))  # need not be symmetric
    A = CountingOperator(matrix)
    diagonal = thl.exact_diagonal(A, block_size=block_size)
    np.testing.assert_array_equal(diagonal, np.diag(matrix))
    assert sum(A.matmat_columns) == 40
    expected_calls = 1 if block_size is None else math.ceil(40 / block_size)
    assert len(A.matmat_columns) == expected_calls
    assert A.matvec_calls == 0


def test_exact_diagonal_accepts_arrays_and_sparse_matrices():
    import scipy.sparse

    matrix = scipy.sparse.random(30, 30, density=0.2, random_state=1, format="csr")
    np.testing.assert_array_equal(thl.exact_diagonal(matrix), matrix.diagonal())
    np.testing.assert_array_equal(
        thl.exact_diagonal(matrix.toarray(), block_size=4), matrix.diagonal()
    )


def test_exact_diagonal_progress_bar(capsys):
    diagonal = thl.exact_diagonal(np.diag(np.arange(6.0)), block_size=2, progress=True)
    np.testing.assert_array_equal(diagonal, np.arange(6.0))
    assert "exact diagonal" in capsys.readouterr().err


# --- trace estimators: accuracy and rates -----------------------------------

HARMONIC = with_spectrum(1.0 / np.arange(1, 401), seed=1)  # eigenvalues 1/i


def test_rademacher_probes_are_fair_independent_signs():
    from tfhess_linop import _mpi

    rng = np.random.default_rng(11)
    probes = _mpi.draw(rng, (64, 1001), None, "rademacher")
    assert probes.shape == (64, 1001) and probes.dtype == np.float64
    assert set(np.unique(probes)) == {-1.0, 1.0}
    m = probes.size
    # Mean, neighbours' products and products across rows are each a sum of
    # m (or about m) independent signs: within 4.5 standard deviations.
    assert abs(probes.mean()) < 4.5 / np.sqrt(m)
    assert abs((probes[:, 1:] * probes[:, :-1]).mean()) < 4.5 / np.sqrt(m)
    assert abs((probes[1:] * probes[:-1]).mean()) < 4.5 / np.sqrt(m)
    # Every bit position of a byte is used alike (columns 8 apart share one).
    by_position = probes[:, :1000].reshape(64, 125, 8).mean(axis=(0, 1))
    assert np.all(np.abs(by_position) < 4.5 / np.sqrt(m / 8))
    # Rows drawn in two calls are the rows of one call.
    again = np.random.default_rng(11)
    split = np.vstack([_mpi.draw(again, (k, 1001), None, "rademacher") for k in (40, 24)])
    np.testing.assert_array_equal(split, probes)


@pytest.mark.parametrize("length", [1, 31, 33, 100, 1001])
def test_rademacher_signs_are_the_generator_bits_in_pieces(length, monkeypatch):
    # The signs are unpacked piece by piece; with pieces of 16 entries, rows
    # of every length cross piece and byte boundaries. Reference: each row
    # takes whole 32-bit words of the generator's bytes, bit b -> 2b - 1.
    from tfhess_linop import _mpi
    from tfhess_linop._mpi import _draws

    monkeypatch.setattr(_draws, "_SIGN_PIECE", 16)
    rows = 5
    signs = _mpi.draw(np.random.default_rng(7), (rows, length), None, "rademacher")
    row_bytes = 4 * -(-length // 32)
    raw = np.frombuffer(np.random.default_rng(7).bytes(rows * row_bytes), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(rows, row_bytes), axis=1)[:, :length]
    np.testing.assert_array_equal(signs, 2.0 * bits - 1.0)


def test_hutchinson_error_shrinks_like_one_over_sqrt_m():
    truth = np.trace(HARMONIC)
    seeds = range(40)
    coarse = relative_rms_errors(thl.hutchinson_trace, HARMONIC, 16, truth, seeds)
    fine = relative_rms_errors(thl.hutchinson_trace, HARMONIC, 256, truth, seeds)
    # 16 times the products: 1/4 of the error for a 1/sqrt(m) rate.
    assert 1 / 8 < fine / coarse < 1 / 2


@pytest.mark.parametrize("estimator", [thl.hutchpp_trace, thl.xtrace])
def test_low_rank_trace_error_shrinks_like_one_over_m(estimator):
    truth = np.trace(HARMONIC)
    seeds = range(40)
    coarse = relative_rms_errors(estimator, HARMONIC, 12, truth, seeds)
    fine = relative_rms_errors(estimator, HARMONIC, 192, truth, seeds)
    # 16 times the products: 1/16 of the error for a 1/m rate, 1/4 for 1/sqrt(m).
    assert fine / coarse < 1 / 8


def test_xtrace_beats_hutchpp_beats_hutchinson_per_product():
    A = with_spectrum(1.0 / np.arange(1, 301) ** 2, seed=2)
    truth = np.trace(A)
    seeds = range(40)
    errors = {
        estimator.__name__: relative_rms_errors(estimator, A, 30, truth, seeds)
        for estimator in TRACE_ESTIMATORS
    }
    assert errors["xtrace"] < errors["hutchpp_trace"] < errors["hutchinson_trace"] / 4


@pytest.mark.parametrize("estimator", TRACE_ESTIMATORS)
@pytest.mark.parametrize(
    "eigenvalues",
    [np.linspace(1.0, 2.0, 80), np.linspace(-1.0, 1.0, 80) ** 3],
    ids=["flat", "indefinite"],
)
def test_trace_estimators_are_unbiased_with_calibrated_errors(estimator, eigenvalues):
    A = with_spectrum(eigenvalues, seed=3)
    truth = np.trace(A)
    results = [estimator(A, 12, rng=seed) for seed in range(300)]
    estimates = np.array([r.estimate for r in results])
    errors = np.array([r.standard_error for r in results])
    spread = estimates.std(ddof=1)
    assert abs(estimates.mean() - truth) < 4 * spread / np.sqrt(estimates.size)
    # The reported standard error matches the actual spread of the estimates.
    assert 0.6 < spread / errors.mean() < 1.6


@pytest.mark.parametrize("estimator", [thl.hutchpp_trace, thl.xtrace])
@pytest.mark.parametrize("rank", [5, 12])
def test_low_rank_trace_is_exact_once_the_sketch_spans_the_range(estimator, rank):
    rng = np.random.default_rng(4)
    factor = rng.standard_normal((100, rank))
    A = factor @ factor.T
    estimate, standard_error = estimator(A, 40, rng=5)
    assert estimate == pytest.approx(np.trace(A), rel=1e-10)
    assert standard_error < 1e-9 * np.trace(A)


def test_xtrace_is_exact_for_a_multiple_of_the_identity():
    # The rescaled residual probes make each leave-one-out sample exact here;
    # plain Gaussian residual probes would not.
    estimate, standard_error = thl.xtrace(2.0 * np.eye(50), 10, rng=0)
    assert estimate == pytest.approx(100.0, rel=1e-12)
    assert standard_error < 1e-10


@pytest.mark.parametrize("estimator", [thl.hutchpp_trace, thl.xtrace])
def test_budget_of_n_products_gives_the_exact_trace(estimator):
    A = CountingOperator(with_spectrum(np.linspace(-3.0, 5.0, 20), seed=6))
    result = estimator(A, 20, rng=0)
    assert result.method == "exact"
    assert result.estimate == pytest.approx(np.trace(A.matrix), abs=1e-12)
    assert result.standard_error == 0.0
    assert result.num_matvecs == sum(A.matmat_columns) == 20


def test_products_go_through_matmat_in_blocks():
    A = CountingOperator(with_spectrum(np.linspace(0.0, 1.0, 50)))
    assert thl.hutchpp_trace(A, 31, rng=0).num_matvecs == 31
    assert A.matmat_columns == [10, 10, 11]
    A.matmat_columns.clear()
    assert thl.xtrace(A, 31, rng=0).num_matvecs == 30
    assert A.matmat_columns == [15, 15]
    A.matmat_columns.clear()
    assert thl.hutchinson_trace(A, 31, rng=0, block_size=8).num_matvecs == 31
    assert A.matmat_columns == [8, 8, 8, 7]
    assert A.matvec_calls == 0


@pytest.mark.parametrize("block_size", [1, 3, None])
def test_hutchinson_results_do_not_depend_on_block_size(block_size):
    A = with_spectrum(np.linspace(0.0, 1.0, 30))
    reference = thl.hutchinson_trace(A, 10, rng=7, block_size=10)
    result = thl.hutchinson_trace(A, 10, rng=7, block_size=block_size)
    assert result.estimate == pytest.approx(reference.estimate, rel=1e-13)
    assert result.standard_error == pytest.approx(reference.standard_error, rel=1e-10)
    diagonal_reference = thl.hutchinson_diagonal(A, 10, rng=7, block_size=10)
    diagonal = thl.hutchinson_diagonal(A, 10, rng=7, block_size=block_size)
    np.testing.assert_allclose(diagonal.estimate, diagonal_reference.estimate, 1e-12)
    np.testing.assert_allclose(diagonal.standard_error, diagonal_reference.standard_error, 1e-10)


@pytest.mark.parametrize("m", [2, 3, 10])
def test_hutchinson_standard_errors_are_sample_deviations(m):
    # For [[0, 1], [1, 0]] every random-sign sample z^T A z is +-2 (and each
    # entry of z * A z is +-1), so the estimate tells how many were positive
    # and fixes the sample standard deviation.
    A = np.array([[0.0, 1.0], [1.0, 0.0]])
    for seed in range(5):
        estimate, standard_error = thl.hutchinson_trace(A, m, rng=seed)
        positive = round((estimate / 2 + 1) * m / 2)
        samples = np.repeat([2.0, -2.0], [positive, m - positive])
        assert estimate == pytest.approx(samples.mean(), abs=1e-14)
        assert standard_error == pytest.approx(samples.std(ddof=1) / np.sqrt(m), abs=1e-14)
        diagonal, errors = thl.hutchinson_diagonal(A, m, rng=seed)
        np.testing.assert_allclose(diagonal, estimate / 2, atol=1e-14)
        np.testing.assert_allclose(errors, standard_error / 2, atol=1e-14)


def test_hutchinson_with_gaussian_probes_is_unbiased():
    A = with_spectrum(np.linspace(1.0, 2.0, 40), seed=8)
    estimates = [
        thl.hutchinson_trace(A, 8, rng=seed, distribution="normal")[0] for seed in range(200)
    ]
    spread = np.std(estimates, ddof=1)
    assert abs(np.mean(estimates) - np.trace(A)) < 4 * spread / np.sqrt(200)
    # Gaussian probes: variance 2 ||A||_F^2 / m (a property random signs lack).
    expected = np.sqrt(2 * np.sum(A**2) / 8)
    assert 0.8 < spread / expected < 1.2


# --- diagonal estimators ----------------------------------------------------


def test_hutchinson_diagonal_error_shrinks_like_one_over_sqrt_m():
    truth = np.diag(HARMONIC)

    def rms_error(m):
        errors = [thl.hutchinson_diagonal(HARMONIC, m, rng=s)[0] - truth for s in range(20)]
        return np.sqrt(np.mean(np.square(errors)))

    assert 1 / 8 < rms_error(256) / rms_error(16) < 1 / 2


@pytest.mark.parametrize("estimator", DIAGONAL_ESTIMATORS)
def test_diagonal_estimators_are_unbiased_with_calibrated_errors(estimator):
    A = with_spectrum(np.linspace(-1.0, 1.0, 60) ** 3 + 0.5, seed=9)
    results = [estimator(A, 12, rng=seed) for seed in range(300)]
    estimates = np.array([r.estimate for r in results])
    errors = np.array([r.standard_error for r in results])
    spread = estimates.std(axis=0, ddof=1)
    z = (estimates.mean(axis=0) - np.diag(A)) / (spread / np.sqrt(len(results)))
    assert np.sqrt(np.mean(z**2)) < 1.5  # about 1 if unbiased
    assert np.max(np.abs(z)) < 5
    assert 0.6 < np.sqrt(np.mean(spread**2) / np.mean(errors**2)) < 1.6


def test_xdiag_beats_hutchinson_diagonal_on_decaying_spectra():
    A = with_spectrum(0.7 ** np.arange(200), seed=10)
    truth = np.diag(A)

    def rms_error(estimator):
        errors = [estimator(A, 40, rng=s)[0] - truth for s in range(20)]
        return np.sqrt(np.mean(np.square(errors)))

    assert rms_error(thl.xdiag) < rms_error(thl.hutchinson_diagonal) / 30


@pytest.mark.parametrize("rank", [5, 12])
def test_xdiag_is_exact_for_low_rank(rank):
    factor = np.random.default_rng(11).standard_normal((100, rank))
    A = factor @ factor.T
    result = thl.xdiag(A, 40, rng=0)
    np.testing.assert_allclose(result.estimate, np.diag(A), rtol=1e-10)
    assert np.max(result.standard_error) < 1e-9 * np.max(np.diag(A))


def test_xdiag_with_a_budget_of_n_products_is_exact():
    A = with_spectrum(np.linspace(-3.0, 5.0, 20), seed=6)
    result = thl.xdiag(A, 25, rng=0)
    assert result.method == "exact"
    assert result.num_matvecs == 20
    np.testing.assert_allclose(result.estimate, np.diag(A), atol=1e-13)
    np.testing.assert_array_equal(result.standard_error, np.zeros(20))


# --- spectral density ---------------------------------------------------------

OUTLIER_SPECTRUM = np.concatenate(
    [[-0.5], np.random.default_rng(12).uniform(0.0, 1.0, 296), [3.0, 5.0, 8.0]]
)
OUTLIER_MATRIX = with_spectrum(OUTLIER_SPECTRUM, seed=13)


@pytest.fixture(scope="module")
def outlier_density():
    return thl.spectral_density(OUTLIER_MATRIX, num_probes=20, num_steps=60, rng=14)


def test_density_has_the_documented_shapes(outlier_density):
    result = outlier_density
    assert isinstance(result, SpectralDensity)
    assert result.nodes.shape == result.weights.shape == (20, 60)
    assert result.grid.shape == result.density.shape == (1000,)
    assert result.n == 300
    np.testing.assert_array_equal(result.num_steps, np.full(20, 60))
    assert result.num_matvecs == 20 * 60
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(np.diff(result.nodes, axis=1) >= 0)


def test_density_finds_the_extreme_eigenvalues(outlier_density):
    eigenvalues = np.linalg.eigvalsh(OUTLIER_MATRIX)
    assert outlier_density.ritz_max == pytest.approx(eigenvalues[-1], abs=1e-10)
    assert outlier_density.ritz_min == pytest.approx(eigenvalues[0], abs=1e-10)


def test_density_moments_match_the_dense_spectrum(outlier_density):
    A, P, n = OUTLIER_MATRIX, 20, 300
    assert outlier_density.moment(0) == pytest.approx(1.0, rel=1e-12)
    for order, power in ((1, A), (2, A @ A), (3, A @ A @ A)):
        # Hutchinson with random signs over n: variance 2 (||B||_F^2 - sum b_ii^2) / n^2.
        deviation = np.sqrt(2 * (np.sum(power**2) - np.sum(np.diag(power) ** 2)) / P) / n
        exact = np.trace(power) / n
        assert abs(outlier_density.moment(order) - exact) < 4 * deviation


def test_density_is_close_to_the_eigenvalue_distribution(outlier_density):
    result = outlier_density
    distance = wasserstein_distance(
        result.nodes.ravel(),
        OUTLIER_SPECTRUM,
        u_weights=result.weights.ravel(),
    )
    assert distance < 0.02 * (OUTLIER_SPECTRUM.max() - OUTLIER_SPECTRUM.min())
    # Smoothed with the same kernel, the exact spectrum gives nearly the same curve.
    sigma = result.sigma
    kernel = np.exp(-0.5 * ((result.grid[:, None] - OUTLIER_SPECTRUM) / sigma) ** 2)
    exact_density = kernel.mean(axis=1) / (sigma * np.sqrt(2 * np.pi))
    spacing = result.grid[1] - result.grid[0]
    assert np.sum(result.density) * spacing == pytest.approx(1.0, abs=1e-3)
    assert np.sum(np.abs(result.density - exact_density)) * spacing < 0.15


def test_density_evaluate_is_the_kernel_sum(outlier_density):
    result = outlier_density
    x = np.array([[-0.5, 0.2], [3.0, 10.0]])
    sigma = 0.05
    kernel = np.exp(-0.5 * ((x[..., None, None] - result.nodes) / sigma) ** 2)
    expected = (kernel * result.weights).sum(axis=(-2, -1)) / 20
    expected /= sigma * np.sqrt(2 * np.pi)
    np.testing.assert_allclose(result.evaluate(x, sigma=sigma), expected, rtol=1e-12)
    np.testing.assert_allclose(result.evaluate(result.grid), result.density, rtol=1e-12)


def test_each_lanczos_step_is_one_batched_product():
    A = CountingOperator(OUTLIER_MATRIX)
    result = thl.spectral_density(A, num_probes=7, num_steps=25, rng=0)
    assert A.matmat_columns == [7] * 25
    assert A.matvec_calls == 0
    assert result.num_matvecs == 7 * 25


def test_full_krylov_space_gives_nodes_at_eigenvalues():
    eigenvalues = np.linspace(-2.0, 3.0, 40) ** 3
    A = with_spectrum(eigenvalues, seed=15)
    result = thl.spectral_density(A, num_probes=3, num_steps=40, rng=0)
    # With n steps every quadrature is exact: its nodes are eigenvalues.
    distances = np.min(np.abs(result.nodes[..., None] - eigenvalues), axis=-1)
    assert np.max(distances[result.weights > 1e-8]) < 1e-8


def test_lanczos_stops_at_an_invariant_subspace():
    eigenvalues = np.repeat([1.0, 2.0, 4.0], [10, 5, 15])
    A = CountingOperator(with_spectrum(eigenvalues, seed=16))
    result = thl.spectral_density(A, num_probes=4, num_steps=50, rng=0)
    np.testing.assert_array_equal(result.num_steps, [3, 3, 3, 3])
    assert result.nodes.shape == (4, 3)
    np.testing.assert_allclose(result.nodes, np.tile([1.0, 2.0, 4.0], (4, 1)), atol=1e-12)
    assert A.matmat_columns[:3] == [4, 4, 4]
    assert result.num_matvecs == sum(A.matmat_columns) == 12
    assert result.moment(1) == pytest.approx(np.mean(eigenvalues), rel=0.2)


def test_probes_that_stop_early_are_padded_with_zero_weights():
    # I + 9 u u^T with u = (e1 - e2)/sqrt(2): a random-sign probe with z1 = z2
    # is an eigenvector (one step); any other sees the eigenvalues 1 and 10.
    A = np.eye(6)
    A[:2, :2] += 4.5 * np.array([[1.0, -1.0], [-1.0, 1.0]])
    result = thl.spectral_density(A, num_probes=8, num_steps=6, rng=0)
    short = result.num_steps == 1
    assert sorted(set(result.num_steps.tolist())) == [1, 2]
    assert result.nodes.shape == (8, 2)
    np.testing.assert_allclose(result.nodes[short], 1.0, atol=1e-12)
    np.testing.assert_array_equal(result.weights[short], [[1.0, 0.0]] * short.sum())
    np.testing.assert_allclose(result.nodes[~short], [[1.0, 10.0]] * (~short).sum())
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0)
    assert result.num_matvecs == result.num_steps.sum()


def test_multiple_of_identity_gets_a_positive_default_sigma():
    result = thl.spectral_density(3.0 * np.eye(10), num_probes=2, num_steps=5, rng=0)
    assert result.num_steps.tolist() == [1, 1]
    assert result.ritz_min == result.ritz_max == pytest.approx(3.0)
    assert result.sigma == pytest.approx(3e-3)
    assert result.grid[np.argmax(result.density)] == pytest.approx(3.0, abs=result.sigma)


def test_num_steps_is_capped_at_n():
    result = thl.spectral_density(np.diag(np.arange(8.0)), num_probes=2, num_steps=50, rng=1)
    assert result.nodes.shape == (2, 8)
    np.testing.assert_allclose([result.ritz_min, result.ritz_max], [0.0, 7.0], atol=1e-12)
    assert result.sigma == pytest.approx(7.0 / 8)


def test_sigma_and_grid_size_are_honoured():
    result = thl.spectral_density(OUTLIER_MATRIX, 2, 10, grid_size=33, sigma=0.25, rng=0)
    assert result.sigma == 0.25
    assert result.grid.shape == (33,)
    assert result.grid[0] == pytest.approx(result.ritz_min - 1.25)
    assert result.grid[-1] == pytest.approx(result.ritz_max + 1.25)


def test_gaussian_start_vectors():
    result = thl.spectral_density(OUTLIER_MATRIX, 10, 30, rng=0, distribution="normal")
    assert result.ritz_max == pytest.approx(8.0, abs=1e-8)


# --- results: printing, serialising -----------------------------------------


def test_trace_result_unpacks_prints_and_serialises():
    result = thl.xtrace(HARMONIC, 20, rng=0)
    assert isinstance(result, TraceEstimate)
    estimate, standard_error = result
    assert (estimate, standard_error) == (result.estimate, result.standard_error)
    assert isinstance(estimate, float)
    assert "xtrace" in repr(result)
    data = json.loads(json.dumps(result.to_dict()))
    assert data == {
        "method": "xtrace",
        "estimate": estimate,
        "standard_error": standard_error,
        "num_matvecs": 20,
    }
    copy = pickle.loads(pickle.dumps(result))
    assert copy == result
    assert (copy.method, copy.num_matvecs) == ("xtrace", 20)


def test_diagonal_result_unpacks_and_serialises():
    result = thl.xdiag(HARMONIC, 20, rng=0)
    assert isinstance(result, DiagonalEstimate)
    diagonal, standard_error = result
    assert diagonal.shape == standard_error.shape == (400,)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["method"] == "xdiag"
    np.testing.assert_array_equal(data["estimate"], diagonal)
    assert "n=400" in repr(result)


def test_density_result_serialises(outlier_density):
    data = json.loads(json.dumps(outlier_density.to_dict()))
    assert data["ritz_max"] == outlier_density.ritz_max
    np.testing.assert_array_equal(data["nodes"], outlier_density.nodes)
    np.testing.assert_array_equal(data["density"], outlier_density.density)
    assert data["num_matvecs"] == 1200
    text = repr(outlier_density)
    assert "num_probes=20" in text and len(text) < 400


# --- reproducibility and SPMD safety ----------------------------------------


def run_everything(A, rng):
    rng = np.random.default_rng(rng)
    return [
        thl.hutchinson_trace(A, 6, rng=rng, block_size=4),
        thl.hutchpp_trace(A, 9, rng=rng),
        thl.xtrace(A, 8, rng=rng),
        thl.hutchinson_diagonal(A, 6, rng=rng, block_size=4),
        thl.xdiag(A, 8, rng=rng),
        thl.spectral_density(A, 3, 10, rng=rng).nodes,
    ]


def assert_same_results(first, second):
    for a, b in zip(first, second, strict=True):
        for x, y in zip(np.atleast_1d(a), np.atleast_1d(b), strict=True):
            np.testing.assert_array_equal(x, y)


def test_same_seed_same_results():
    A = with_spectrum(np.linspace(-1.0, 2.0, 30))
    assert_same_results(run_everything(A, 3), run_everything(A, 3))


class RecordingComm:
    """Rank 0 of a two-rank communicator: records every broadcast it sends."""

    def __init__(self):
        self.sent = []

    def Get_size(self):
        return 2

    def Get_rank(self):
        return 0

    def Allreduce(self, *args, **kwargs):
        raise AssertionError("the estimators must not reduce anything")

    def Iallreduce(self, sendbuf, recvbuf, op=None):
        # The status exchanges that open and close every collective call: the
        # other rank makes the same call, so the status is left as it is.
        return CompletedRequest()

    def Bcast(self, array, root=0):
        assert root == 0
        self.sent.append(array.copy())


class CompletedRequest:
    def Wait(self):
        return None


class ReplayingComm(RecordingComm):
    """Rank 1: receives what rank 0 sent, in order."""

    def __init__(self, sent):
        self.received = list(sent)

    def Get_rank(self):
        return 1

    def Bcast(self, array, root=0):
        array[...] = self.received.pop(0)


def test_ranks_with_different_seeds_get_rank_zero_probes():
    matrix = with_spectrum(np.linspace(-1.0, 2.0, 30))
    rank0 = RecordingComm()
    results0 = run_everything(CountingOperator(matrix, comm=rank0), rng=1)
    assert len(rank0.sent) > 0
    rank1 = ReplayingComm(rank0.sent)
    results1 = run_everything(CountingOperator(matrix, comm=rank1), rng=2)
    assert rank1.received == []
    assert_same_results(results0, results1)
    # And without the communicator the second seed gives other results.
    with pytest.raises(AssertionError):
        assert_same_results(results0, run_everything(matrix, rng=2))


# --- small TensorFlow Hessians ------------------------------------------------


@pytest.fixture(scope="module")
def tf_hessian():
    rng = np.random.default_rng(17)
    model = mlp(sizes=(3, 6, 2), seed=5)
    x = rng.standard_normal((20, 3))
    y = rng.standard_normal((20, 2))
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=7)
    reference = dense_reference(mse_mean(model, x, y), model.trainable_variables)
    return H, reference


def test_exact_diagonal_of_a_tf_hessian(tf_hessian):
    H, reference = tf_hessian
    A = thl.as_linop(H)
    diagonal = thl.exact_diagonal(A, block_size=16)
    np.testing.assert_allclose(diagonal, np.diag(reference), rtol=1e-9, atol=1e-12)
    assert A.n_hvp == H.n


def test_trace_estimators_on_a_tf_hessian(tf_hessian):
    H, reference = tf_hessian
    truth = np.trace(reference)
    scale = np.linalg.norm(reference)
    for estimator in TRACE_ESTIMATORS:
        estimate, standard_error = estimator(thl.as_linop(H), 24, rng=0)
        assert abs(estimate - truth) < 4 * standard_error + 1e-9 * scale
    assert thl.xtrace(thl.as_linop(H), H.n, rng=0)[0] == pytest.approx(truth, rel=1e-9)


def test_diagonal_estimators_on_a_tf_hessian(tf_hessian):
    H, reference = tf_hessian
    for estimator in DIAGONAL_ESTIMATORS:
        diagonal, standard_error = estimator(thl.as_linop(H), 24, rng=0)
        z = (diagonal - np.diag(reference)) / np.maximum(standard_error, 1e-12)
        assert np.sqrt(np.mean(z**2)) < 2


def test_spectral_density_of_a_tf_hessian(tf_hessian):
    H, reference = tf_hessian
    eigenvalues = np.linalg.eigvalsh(reference)
    A = thl.as_linop(H)
    result = thl.spectral_density(A, num_probes=4, num_steps=H.n, rng=0)
    assert result.ritz_min == pytest.approx(eigenvalues[0], abs=1e-8)
    assert result.ritz_max == pytest.approx(eigenvalues[-1], abs=1e-8)
    assert A.n_hvp == result.num_matvecs


def test_spectral_density_of_a_tf_hessian_equals_that_of_its_dense_matrix(tf_hessian):
    # The products of a HessianOperator are written into the Lanczos basis
    # itself (`_matmat_into`); a dense matrix's are copied there.
    H, reference = tf_hessian
    steps = max(2, H.n // 3)
    ours = thl.spectral_density(thl.as_linop(H), num_probes=5, num_steps=steps, rng=3)
    dense = thl.spectral_density(reference, num_probes=5, num_steps=steps, rng=3)
    np.testing.assert_array_equal(ours.num_steps, dense.num_steps)
    scale = np.abs(np.linalg.eigvalsh(reference)).max()
    np.testing.assert_allclose(ours.nodes, dense.nodes, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(ours.weights, dense.weights, rtol=0, atol=1e-10)


# --- argument checks ----------------------------------------------------------

SQUARE = np.eye(6)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: thl.hutchinson_trace(np.ones((3, 4)), 5), ValueError, "`A` must be square"),
        (lambda: thl.xtrace(np.ones(4), 5), ValueError, "`A` must be a 2-D array"),
        (lambda: thl.xdiag("matrix", 5), TypeError, "`A` must be a LinearOperator"),
        (lambda: thl.hutchpp_trace(SQUARE * 1j, 5), TypeError, "`A` must be real"),
        (lambda: thl.hutchinson_trace(SQUARE, 1), ValueError, "`num_matvecs` must be at least 2"),
        (lambda: thl.hutchpp_trace(SQUARE, 3), ValueError, "at least 4 for Hutch++, got 3"),
        (lambda: thl.xtrace(SQUARE, 3), ValueError, "at least 4 for XTrace, got 3"),
        (lambda: thl.xdiag(SQUARE, 2), ValueError, "at least 4 for XDiag, got 2"),
        (lambda: thl.hutchinson_diagonal(SQUARE, 1), ValueError, "at least 2"),
        (lambda: thl.xtrace(SQUARE, 4.0), TypeError, "`num_matvecs` must be an integer"),
        (lambda: thl.xtrace(SQUARE, True), TypeError, "`num_matvecs` must be an integer"),
        (lambda: thl.xtrace(SQUARE, 4, rng="seed"), TypeError, "`rng` must be"),
        (
            lambda: thl.hutchinson_trace(SQUARE, 4, distribution="uniform"),
            ValueError,
            "`distribution` must be 'rademacher' or 'normal', got 'uniform'",
        ),
        (lambda: thl.hutchinson_trace(SQUARE, 4, block_size=0), ValueError, "`block_size`"),
        (lambda: thl.exact_diagonal(SQUARE, block_size=2.5), TypeError, "`block_size`"),
        (lambda: thl.exact_diagonal(SQUARE, progress="yes"), TypeError, "`progress`"),
        (lambda: thl.spectral_density(SQUARE, 0), ValueError, "`num_probes` must be at least 1"),
        (lambda: thl.spectral_density(SQUARE, 2, 0), ValueError, "`num_steps` must be at least 1"),
        (lambda: thl.spectral_density(SQUARE, grid_size=1), ValueError, "`grid_size`"),
        (lambda: thl.spectral_density(SQUARE, sigma=-1.0), ValueError, "`sigma` must be positive"),
        (lambda: thl.spectral_density(SQUARE, sigma="wide"), TypeError, "`sigma`"),
        (lambda: thl.spectral_density(np.zeros((0, 0))), ValueError, "at least one row"),
        (lambda: thl.plot_spectral_density({"density": []}), TypeError, "`result` must be"),
    ],
)
def test_bad_arguments_are_rejected_with_clear_messages(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_moment_order_is_checked(outlier_density):
    with pytest.raises(ValueError, match="`order` must be at least 0"):
        outlier_density.moment(-1)


def test_non_finite_products_are_reported():
    with pytest.raises(ValueError, match="non-finite"):
        thl.xtrace(np.full((6, 6), np.nan), 4, rng=0)


# --- plotting ---------------------------------------------------------------


def test_plot_draws_a_log_density_with_marked_extremes(outlier_density, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots()
    try:
        returned = thl.plot_spectral_density(outlier_density, ax, color="k")
        assert returned is ax
        assert ax.get_yscale() == "log"
        (curve,) = [line for line in ax.get_lines() if line.get_label() == "SLQ density"]
        np.testing.assert_array_equal(curve.get_xdata(), outlier_density.grid)
        marks = [line.get_xdata()[0] for line in ax.get_lines() if line is not curve]
        assert marks == [outlier_density.ritz_min, outlier_density.ritz_max]
        texts = " ".join(text.get_text() for text in ax.texts)
        assert "8" in texts and "-0.5" in texts
        figure.savefig(tmp_path / "density.png")
        assert (tmp_path / "density.png").stat().st_size > 1000
    finally:
        plt.close(figure)


@pytest.mark.parametrize(("value", "error"), [(1.0, ValueError), ("big", TypeError)])
def test_plot_checks_dynamic_range(outlier_density, value, error):
    with pytest.raises(error, match="`dynamic_range` must be a number above 1"):
        thl.plot_spectral_density(outlier_density, dynamic_range=value)


def test_plot_without_matplotlib_says_how_to_install_it(outlier_density, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install"):
        thl.plot_spectral_density(outlier_density)


@pytest.mark.parametrize("num_matvecs", [30, 31, 32])
def test_hutchpp_on_a_tf_hessian_equals_hutchpp_on_its_dense_matrix(tf_hessian, num_matvecs):
    # The operator writes its products into Hutch++'s reused blocks (and the
    # probes are drawn into them); a dense matrix takes the generic route.
    # Same probes, same products to round-off: the same estimate. 31 and 32
    # products make the Hutchinson block wider than the sketch.
    H, reference = tf_hessian
    A = thl.as_linop(H)
    got = thl.hutchpp_trace(A, num_matvecs, rng=11)
    want = thl.hutchpp_trace(reference, num_matvecs, rng=11)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert A.n_hvp == num_matvecs


@pytest.mark.parametrize(
    "estimator, num_matvecs",
    [
        (thl.xtrace, 24),
        (thl.xdiag, 24),
        (thl.hutchinson_diagonal, 24),
        (functools.partial(thl.hutchinson_diagonal, block_size=7), 24),
        (functools.partial(thl.hutchinson_trace, block_size=7), 24),
    ],
)
def test_reused_blocks_on_a_tf_hessian_equal_the_dense_route(tf_hessian, estimator, num_matvecs):
    # XTrace and XDiag write A Q into their sketch, Hutchinson's estimators
    # reuse two blocks (7 columns: the last block of 3 in their first
    # columns); a dense matrix's products are fresh arrays. Same probes,
    # same products to round-off: the same estimates.
    H, reference = tf_hessian
    A = thl.as_linop(H)
    got = estimator(A, num_matvecs, rng=4)
    want = estimator(reference, num_matvecs, rng=4)
    scale = np.abs(want[0]).max()
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-8, atol=1e-10 * scale)
    assert A.n_hvp == num_matvecs


@pytest.mark.parametrize(
    "estimator", [thl.xtrace, thl.xdiag, thl.hutchinson_diagonal, thl.hutchinson_trace]
)
def test_an_operator_returning_its_input_is_not_overwritten(estimator):
    # The identity as an operator that hands back the probe block itself:
    # writing A Q into "the sketch" would overwrite the probes.
    n = 40
    identity = spla.LinearOperator((n, n), matvec=lambda x: x, matmat=lambda X: X, dtype=float)
    got = estimator(identity, 12, rng=2)
    want = estimator(np.eye(n), 12, rng=2)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_probes_drawn_into_a_block_are_the_same_probes(distribution):
    from tfhess_linop.estimators._common import draw_probes

    fresh = draw_probes(np.random.default_rng(3), 70, 5, None, distribution)
    block = np.full((70, 5), np.nan, order="F")
    drawn = draw_probes(np.random.default_rng(3), 70, 5, None, distribution, out=block)
    assert np.shares_memory(drawn, block)
    np.testing.assert_array_equal(block, fresh)
