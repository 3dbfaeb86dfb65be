"""`HessianOperator` as a SciPy `LinearOperator`: dot test, shapes, counters."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import tensorflow as tf

import tfhess_linop as thl
from conftest import dense_reference, mlp, mse_mean


@pytest.fixture
def problem(rng):
    model = mlp(sizes=(3, 4, 2), seed=21)
    x = rng.standard_normal((9, 3))
    y = rng.standard_normal((9, 2))
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=4)
    return thl.as_linop(H), dense_reference(mse_mean(model, x, y), model.trainable_variables)


def test_is_a_float64_scipy_operator(problem):
    A, reference = problem
    assert isinstance(A, spla.LinearOperator)
    assert A.dtype == np.float64
    assert A.shape == reference.shape
    assert A.H is A
    assert A.T is A
    assert thl.as_linop(A) is A


def test_dot_and_symmetry(problem, rng):
    A, _ = problem
    u = rng.standard_normal(A.shape[0])
    v = rng.standard_normal(A.shape[0])
    assert u @ (A @ v) == pytest.approx(v @ (A @ u), rel=1e-12)
    assert u @ A.rmatvec(v) == pytest.approx((A @ u) @ v, rel=1e-12)


def test_products_match_dense_reference(problem, rng):
    A, reference = problem
    v = rng.standard_normal(A.shape[0])
    V = rng.standard_normal((A.shape[0], 5))
    np.testing.assert_allclose(A.matvec(v), reference @ v, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        A.matvec(v[:, None]), (reference @ v)[:, None], rtol=1e-10, atol=1e-13
    )
    np.testing.assert_allclose(A.matmat(V), reference @ V, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(A @ V, reference @ V, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(A.rmatmat(V), reference @ V, rtol=1e-10, atol=1e-13)
    z = v + 1j * V[:, 0]
    np.testing.assert_allclose(A.matvec(z), reference @ z, rtol=1e-10, atol=1e-13)


def test_two_consecutive_products_are_identical(problem, rng):
    A, _ = problem
    v = rng.standard_normal(A.shape[0])
    np.testing.assert_array_equal(A @ v, A @ v)


def test_counts_hessian_vector_products(problem, rng):
    A, _ = problem
    assert A.n_hvp == 0
    A.matvec(rng.standard_normal(A.shape[0]))
    A.matmat(rng.standard_normal((A.shape[0], 4)))
    A.rmatvec(rng.standard_normal(A.shape[0]))
    assert A.n_hvp == 6


def test_input_is_not_mutated(problem, rng):
    A, _ = problem
    V = rng.standard_normal((A.shape[0], 3))
    saved = V.copy()
    A.matmat(V)
    A.matvec(V[:, 0])
    np.testing.assert_array_equal(V, saved)


def test_scipy_solvers_run_unchanged():
    w = tf.Variable(np.array([1.0, -0.5, 2.0]))
    D = np.diag([3.0, 1.0, 7.0])

    def loss(w):
        return (
            0.5 * tf.tensordot(w, tf.linalg.matvec(tf.constant(D), w), 1) + tf.reduce_sum(w**4) / 4
        )

    A = thl.as_linop(thl.Hessian(loss, w))
    expected = D + np.diag(3 * w.numpy() ** 2)
    x, info = spla.cg(A, np.ones(3), rtol=1e-12)
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(expected, np.ones(3)), rtol=1e-10)
    values = spla.eigsh(A, k=1, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(values, [np.linalg.eigvalsh(expected)[-1]], rtol=1e-12)


def test_rejects_non_hessian():
    with pytest.raises(TypeError, match=r"`hessian` must be a tfhess_linop\.Hessian"):
        thl.HessianOperator(np.eye(3))
