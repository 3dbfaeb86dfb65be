"""Partial reorthogonalisation of the SLQ Lanczos runs against full reorthogonalisation."""

import numpy as np
import pytest
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import aslinearoperator

from tfhess_linop.estimators import _lanczos, density

# Outliers far above a bulk: Ritz values converge fast and, without
# reorthogonalisation, Lanczos would return copies of them (ghosts).
N = 400
EIGENVALUES = np.concatenate(
    [[-0.5], np.random.default_rng(0).uniform(0.0, 1.0, N - 5), [3.0, 8.0, 30.0, 100.0]]
)
STEPS = 120
PROBES = 3


@pytest.fixture(scope="module")
def matrix():
    rng = np.random.default_rng(1)
    U = np.linalg.qr(rng.standard_normal((N, N)))[0]
    return (U * EIGENVALUES) @ U.T


@pytest.fixture(scope="module")
def starts():
    return np.random.default_rng(2).choice([-1.0, 1.0], size=(PROBES, N))


def _fully_reorthogonalized(A, start, steps):
    """Textbook Lanczos, each vector orthogonalised twice against all previous ones."""
    V = np.zeros((steps, start.size))
    V[0] = start / np.linalg.norm(start)
    alpha, beta = np.zeros(steps), np.zeros(steps - 1)
    for j in range(steps):
        w = A @ V[j]
        alpha[j] = V[j] @ w
        for _ in range(2):
            w -= V[: j + 1].T @ (V[: j + 1] @ w)
        if j < steps - 1:
            beta[j] = np.linalg.norm(w)
            V[j + 1] = w / beta[j]
    nodes, vectors = eigh_tridiagonal(alpha, beta)
    return nodes, vectors[0] ** 2


def test_nodes_and_weights_equal_full_reorthogonalization(matrix, starts, monkeypatch):
    calls = []
    original = _lanczos._reorthogonalize

    def counted(*arguments):
        calls.append(1)
        return original(*arguments)

    monkeypatch.setattr(_lanczos, "_reorthogonalize", counted)
    diagonals, off_diagonals, steps = _lanczos.batched_lanczos(
        aslinearoperator(matrix), starts, STEPS
    )
    np.testing.assert_array_equal(steps, STEPS)
    nodes, weights = density._gauss_quadrature(diagonals, off_diagonals, steps)
    for p in range(PROBES):
        reference_nodes, reference_weights = _fully_reorthogonalized(matrix, starts[p], STEPS)
        np.testing.assert_allclose(nodes[p], reference_nodes, rtol=0, atol=1e-9)
        np.testing.assert_allclose(weights[p], reference_weights, rtol=0, atol=1e-9)
        # No ghosts: each outlier appears once among the nodes that carry weight.
        for outlier in EIGENVALUES[-4:]:
            near = np.abs(nodes[p] - outlier) < 1e-6 * outlier
            assert near.sum() == 1
    # Orthogonality was lost and restored, but not at every step.
    steps_reorthogonalized = len(calls)
    assert 0 < steps_reorthogonalized < 0.8 * PROBES * (STEPS - 1)
