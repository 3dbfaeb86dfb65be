"""`inverse`, shift-invert `eigsh`, and NumPy interop of the operators.

References: :func:`numpy.linalg.solve` and :func:`numpy.linalg.eigvalsh` on
dense matrices with known spectra, and the nested-tape dense Hessian.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg as sla

import tfhess_linop as thl
from conftest import dense_reference, mlp, mse_mean
from tfhess_linop.inverses import InverseOperator


class Counted(sla.LinearOperator):
    """A dense symmetric matrix as an operator without a matrix, counting products."""

    def __init__(self, matrix):
        self.matrix = matrix
        self.n_hvp = 0
        super().__init__(dtype=np.float64, shape=matrix.shape)

    def _matvec(self, x):
        self.n_hvp += 1
        return self.matrix @ x.reshape(-1)

    def _adjoint(self):
        return self


def known_spectrum(eigenvalues, seed=0):
    n = len(eigenvalues)
    Q = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]
    return (Q * eigenvalues) @ Q.T


SPECTRUM = np.r_[-3.0, -1.0, np.linspace(0.5, 2.0, 26), 10.0, 40.0]
A30 = known_spectrum(SPECTRUM)


@pytest.fixture(scope="module")
def network():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((13, 3)), rng.standard_normal((13, 2))
    model = mlp()
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=5)
    return H, dense_reference(mse_mean(model, x, y), model.trainable_variables)


# ------------------------------------------------------------------ inverse


@pytest.mark.parametrize(
    ("shift", "method"),
    [
        (0.0, "minres"),  # indefinite, nonsingular
        (0.7, "minres"),  # inside the spectrum
        (100.0, "minres"),  # above it
        (-5.0, "minres"),  # below it: positive definite
        (-5.0, "cg"),
        (-3.5, "cg"),
    ],
)
def test_inverse_matches_numpy_solve(shift, method, rng):
    A = Counted(A30)
    inv = thl.inverse(A, shift, method=method, rtol=1e-12)
    assert isinstance(inv, InverseOperator)
    assert inv.shape == (30, 30) and inv.dtype == np.float64
    B = rng.standard_normal((30, 3))
    shifted = A30 - shift * np.eye(30)
    for b in B.T:
        np.testing.assert_allclose(inv @ b, np.linalg.solve(shifted, b), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(inv @ B, np.linalg.solve(shifted, B), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(inv.T @ B[:, 0], np.linalg.solve(shifted, B[:, 0]), rtol=1e-9)
    assert inv.n_solves == 7
    assert inv.n_hvp == A.n_hvp > 0
    assert inv.n_unconverged == 0
    assert inv.last_result.info == 0


def test_inverse_of_a_hessian_operator_counts_its_products(network, rng):
    H, dense = network
    A = thl.as_linop(H)
    lam = 2.0 * max(0.0, -np.linalg.eigvalsh(dense).min()) + 0.1
    damped = thl.inverse(A, -lam, method="cg", rtol=1e-12)  # (H + λI)⁻¹
    g = rng.standard_normal(H.n)
    expected = np.linalg.solve(dense + lam * np.eye(H.n), g)
    np.testing.assert_allclose(damped @ g, expected, rtol=1e-8, atol=1e-12)
    assert damped.n_hvp == A.n_hvp == damped.last_result.n_matvec
    assert damped.comm is None
    np.testing.assert_allclose(
        thl.inverse(H, 0.05) @ g, np.linalg.solve(dense - 0.05 * np.eye(H.n), g), rtol=1e-6
    )


def test_unconverged_solves_warn_or_raise_never_silently():
    inv = thl.inverse(A30, 0.7, maxiter=2)
    with pytest.warns(RuntimeWarning, match="MINRES on .* did not converge in 2 iterations"):
        inv @ np.ones(30)
    assert inv.n_unconverged == 1
    strict = thl.inverse(A30, 0.7, maxiter=2, strict=True)
    with pytest.raises(RuntimeError, match="did not converge"):
        strict @ np.ones(30)
    with pytest.warns(RuntimeWarning, match="not positive definite; use method='minres'"):
        thl.inverse(A30, 0.0, method="cg") @ np.ones(30)
    with pytest.raises(RuntimeError, match="non-positive curvature"):
        thl.inverse(A30, 0.0, method="cg", strict=True) @ np.ones(30)


def test_shift_at_an_eigenvalue_is_reported_and_a_shift_beside_it_works():
    # An exact null space (two zero rows and columns, in shuffled places):
    # Q diag Q^T would round the zero eigenvalues to ~1e-16, and whether MINRES
    # then converges depends on the BLAS.
    matrix = np.zeros((30, 30))
    matrix[2:, 2:] = known_spectrum(np.r_[-1.5, np.linspace(1.0, 3.0, 27)])
    order = np.random.default_rng(3).permutation(30)
    singular = Counted(matrix[np.ix_(order, order)])
    with pytest.warns(RuntimeWarning, match="move the shift away from an eigenvalue"):
        thl.eigsh(singular, k=3, sigma=0.0, return_eigenvectors=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = thl.eigsh(singular, k=3, sigma=1e-3, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(w), [0.0, 0.0, 1.0], atol=1e-10)


def test_inverse_argument_errors():
    with pytest.raises(ValueError, match="`shift` must be a finite real number"):
        thl.inverse(A30, np.nan)
    with pytest.raises(ValueError, match="`method` must be one of 'minres', 'cg'"):
        thl.inverse(A30, method="gmres")
    with pytest.raises(ValueError, match="`rtol` must be a finite non-negative number"):
        thl.inverse(A30, rtol=-1.0)
    with pytest.raises(ValueError, match="`maxiter` must be an integer"):
        thl.inverse(A30, maxiter=0)
    with pytest.raises(TypeError, match="`strict` must be True or False"):
        thl.inverse(A30, strict="yes")
    with pytest.raises(ValueError, match="`A` must be square"):
        thl.inverse(np.ones((3, 4)))


# -------------------------------------------------------- shift-invert eigsh


@pytest.mark.parametrize(("sigma", "k"), [(0.6, 3), (0.0, 2), (-2.2, 1), (12.0, 2)])
def test_shift_invert_eigsh_of_an_operator_uses_minres(sigma, k):
    A = Counted(A30)
    w, v = thl.eigsh(A, k=k, sigma=sigma)
    nearest = np.sort(SPECTRUM[np.argsort(np.abs(SPECTRUM - sigma))[:k]])
    np.testing.assert_allclose(np.sort(w), nearest, rtol=0, atol=1e-10)
    np.testing.assert_allclose(A30 @ v, v * w, atol=1e-8)
    # SciPy's own path on the same operator: GMRES to ~1e-12 per solve.
    scipy_count = Counted(A30)
    w_scipy = sla.eigsh(scipy_count, k=k, sigma=sigma, v0=np.ones(30), return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(w_scipy), nearest, atol=1e-10)
    assert A.n_hvp < scipy_count.n_hvp


def test_shift_invert_eigsh_of_a_hessian_against_eigvalsh(network):
    H, dense = network
    A = thl.as_linop(H)
    exact = np.linalg.eigvalsh(dense)
    w = thl.eigsh(A, k=3, sigma=0.05, return_eigenvectors=False)
    nearest = np.sort(exact[np.argsort(np.abs(exact - 0.05))[:3]])
    np.testing.assert_allclose(np.sort(w), nearest, rtol=0, atol=1e-10 * np.abs(exact).max())
    assert A.n_hvp > 0


def test_shift_invert_eigsh_of_matrices_keeps_scipys_lu():
    w = thl.eigsh(A30, k=2, sigma=0.6, return_eigenvectors=False)
    nearest = np.sort(SPECTRUM[np.argsort(np.abs(SPECTRUM - 0.6))[:2]])
    np.testing.assert_allclose(np.sort(w), nearest, atol=1e-12)
    sparse = scipy.sparse.csr_array(A30)
    np.testing.assert_allclose(np.sort(thl.eigsh(sparse, k=2, sigma=0.6)[0]), nearest, atol=1e-12)
    integers = np.diag(np.arange(1, 11))
    np.testing.assert_allclose(np.sort(thl.eigsh(integers, k=2, sigma=4.2)[0]), [4.0, 5.0])


def test_shift_invert_eigsh_with_a_given_opinv_uses_it():
    A = Counted(A30)
    inv = thl.inverse(A, 0.6, rtol=1e-12)
    thl.eigsh(A, k=2, sigma=0.6, OPinv=inv, return_eigenvectors=False)
    assert inv.n_solves > 0 and inv.n_hvp == A.n_hvp


# ------------------------------------------------------------ NumPy interop


def test_toarray_is_the_dense_hessian_and_asarray_refuses(network):
    H, dense = network
    A = thl.as_linop(H)
    np.testing.assert_allclose(A.toarray(), dense, rtol=1e-10, atol=1e-13)
    assert A.n_hvp == H.n
    np.testing.assert_allclose(A.toarray(block_size=5), dense, rtol=1e-10, atol=1e-13)
    with pytest.raises(TypeError, match=r"use A\.toarray\(\)"):
        np.asarray(A)
    with pytest.raises(TypeError, match=r"use A\.toarray\(\)"):
        np.array(A)
    # operator algebra with NumPy scalars still works
    v = np.ones(H.n)
    np.testing.assert_allclose((np.float64(2.0) * A) @ v, 2 * dense @ v, rtol=1e-10)
