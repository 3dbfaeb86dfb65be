"""Symmetric test operators with known spectra, and a product-counting wrapper.

Shared by the tests of ``eigen``, ``svd`` and ``solve``.
"""

import numpy as np
from scipy.sparse.linalg import LinearOperator

import tfhess_linop as thl
from conftest import XOR_X, XOR_Y, dense_reference, mse_mean, xor_model

# The Hessian of the seed's loss 2 x³ y³ at (1, 1): eigenvalues 30 and -6.
CUBIC_HESSIAN = np.array([[12.0, 18.0], [18.0, 12.0]])


def spectrum(name, n=60):
    """Eigenvalues of the named test case, in ascending order."""
    rng = np.random.default_rng(7)
    if name == "clustered":
        values = np.r_[10.0, 9.99, 9.98, 5.0, rng.uniform(0.0, 1.0, n - 4)]
    elif name == "indefinite":
        values = np.r_[-12.0, -7.0, 9.0, 4.0, np.linspace(-2.0, 2.0, n - 4)]
    elif name == "rank_deficient":
        values = np.r_[8.0, 6.0, -5.0, 3.0, 2.0, 1.5, -1.0, 0.5, np.zeros(n - 8)]
    elif name == "positive_definite":
        values = np.r_[np.logspace(1, 4, 6), np.linspace(1.0, 3.0, n - 6)]
    else:
        raise ValueError(name)
    return np.sort(values)


def dense_with_spectrum(values, seed=0):
    """Q diag(values) Qᵀ with a random orthogonal Q."""
    n = len(values)
    Q = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    A = (Q * values) @ Q.T
    return 0.5 * (A + A.T)


class CountingOperator(LinearOperator):
    """A symmetric matrix (dense, or diagonal given as a vector) recording the
    width of every product."""

    def __init__(self, matrix):
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.widths = []
        n = self.matrix.shape[0]
        super().__init__(dtype=np.float64, shape=(n, n))

    @property
    def n_products(self):
        return sum(self.widths)

    def _matvec(self, x):
        return self._matmat(x.reshape(-1, 1)).reshape(-1)

    def _matmat(self, X):
        self.widths.append(X.shape[1])
        if self.matrix.ndim == 1:
            return self.matrix[:, None] * X
        return self.matrix @ X

    def _adjoint(self):
        return self


def xor_problem():
    """The seed's XOR network Hessian as an operator, and its dense reference."""
    model = xor_model()
    H = thl.Hessian.from_keras(model, "mse", XOR_X, XOR_Y)
    reference = dense_reference(mse_mean(model, XOR_X, XOR_Y), model.trainable_variables)
    return thl.as_linop(H), reference
