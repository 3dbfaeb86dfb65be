"""dottest, symmetry_test, taylor_test and dense_hessian_reference."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.sparse.linalg import LinearOperator

import tfhess_linop as thl
from conftest import XOR_X, XOR_Y, mse_mean, xor_model
from tfhess_linop.testing import TaylorTestResult, dense_hessian_reference


def cubic_loss(w):
    return 2 * w[0] ** 3 * w[1] ** 3


def cubic_hessian(x, y):
    return np.array([[12 * x * y**3, 18 * x**2 * y**2], [18 * x**2 * y**2, 12 * x**3 * y]])


@pytest.fixture
def cubic():
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    return w, thl.Hessian(cubic_loss, w)


@pytest.fixture(scope="module")
def xor():
    model = xor_model()
    return model, thl.Hessian.from_keras(model, "mse", XOR_X, XOR_Y)


# ----------------------------------------------------------------- dottest


def test_dottest_passes_on_matrices_and_operators(xor):
    assert thl.dottest(np.arange(12.0).reshape(3, 4), rng=0)
    assert thl.dottest(np.diag([1.0, -2.0, 3.0]), rng=1)
    assert thl.dottest(thl.as_linop(xor[1]), rng=2)


def test_dottest_detects_a_wrong_adjoint():
    B = np.arange(12.0).reshape(3, 4)
    wrong = LinearOperator((3, 4), matvec=lambda x: B @ x, rmatvec=lambda y: B.T @ y + 1.0)
    assert thl.dottest(wrong, raiseerror=False, rng=0) is False
    with pytest.raises(AssertionError, match="Dot test failed"):
        thl.dottest(wrong, rng=0)


def test_dottest_rejects_bad_arguments():
    with pytest.raises(TypeError, match="`A` must be a LinearOperator"):
        thl.dottest("A")
    with pytest.raises(ValueError, match="`rtol` must be a finite non-negative"):
        thl.dottest(np.eye(2), rtol=-1.0)


# ----------------------------------------------------------- symmetry_test


def test_symmetry_test(xor):
    assert thl.symmetry_test(thl.as_linop(xor[1]), rng=0)
    assert thl.symmetry_test(cubic_hessian(1.0, 1.0), rng=0)
    asymmetric = np.array([[1.0, 2.0], [0.0, 1.0]])
    assert thl.symmetry_test(asymmetric, raiseerror=False, rng=0) is False
    with pytest.raises(AssertionError, match="Symmetry test failed"):
        thl.symmetry_test(asymmetric, rng=0)
    # When rmatvec is matvec (as for a Hessian operator) only the symmetry
    # test sees an asymmetric product.
    hidden = LinearOperator(
        (2, 2), matvec=lambda x: asymmetric @ x, rmatvec=lambda x: asymmetric @ x
    )
    assert thl.symmetry_test(hidden, raiseerror=False, rng=0) is False


def test_symmetry_test_rejects_non_square():
    with pytest.raises(ValueError, match="`A` must be square"):
        thl.symmetry_test(np.ones((2, 3)))


# ------------------------------------------------------------- taylor_test


def test_taylor_test_cubic_loss_order_three(cubic):
    w, H = cubic
    result = thl.taylor_test(H, np.array([1.0, 1.0]) / np.sqrt(2))
    assert isinstance(result, TaylorTestResult)
    order, steps, errors = result
    assert order == pytest.approx(3.0, abs=0.1)
    assert np.array_equal(steps, 2.0 ** -np.arange(1, 11))
    t = steps / np.sqrt(2)
    exact = np.abs(2 * (1 + t) ** 6 - 2 - 12 * t - 30 * t**2)
    assert np.allclose(errors, exact, rtol=1e-6, atol=1e-13)
    assert np.array_equal(w.numpy(), [1.0, 1.0])


def test_taylor_test_at_a_given_point_restores_the_variables(cubic):
    w, H = cubic
    result = thl.taylor_test(H, point=np.array([0.5, 2.0]), rng=0)
    assert result.order == pytest.approx(3.0, abs=0.15)
    assert np.array_equal(w.numpy(), [1.0, 1.0])


class _Perturbed:
    """A Hessian whose gradient or Hessian-vector product is wrong."""

    def __init__(self, hessian, wrong):
        self._hessian, self._wrong = hessian, wrong
        self.n, self.comm, self.variables = hessian.n, hessian.comm, hessian.variables
        self.loss_value, self.flatten, self.unflatten = (
            hessian.loss_value,
            hessian.flatten,
            hessian.unflatten,
        )

    def value_and_gradient(self):
        value, gradient = self._hessian.value_and_gradient()
        return value, gradient * (1.1 if self._wrong == "gradient" else 1.0)

    def hvp(self, v):
        return self._hessian.hvp(v) * (1.1 if self._wrong == "hessian" else 1.0)


@pytest.mark.parametrize(("wrong", "order"), [("hessian", 2.0), ("gradient", 1.0)])
def test_taylor_test_detects_wrong_derivatives(cubic, wrong, order):
    result = thl.taylor_test(_Perturbed(cubic[1], wrong), rng=0)
    assert result.order == pytest.approx(order, abs=0.15)


def test_taylor_test_xor_network(xor):
    model, H = xor
    before = [v.numpy().copy() for v in model.trainable_variables]
    result = thl.taylor_test(thl.as_linop(H), rng=0, steps=2.0 ** -np.arange(0, 8))
    assert result.order == pytest.approx(3.0, abs=0.3)
    for variable, saved in zip(model.trainable_variables, before, strict=True):
        assert np.array_equal(variable.numpy(), saved)


def test_taylor_test_rejects_bad_arguments(cubic):
    H = cubic[1]
    with pytest.raises(TypeError, match=r"`H` must be a tfhess_linop\.Hessian"):
        thl.taylor_test(np.eye(2))
    with pytest.raises(ValueError, match=r"`direction` must have shape \(2,\)"):
        thl.taylor_test(H, np.ones(3))
    with pytest.raises(ValueError, match=r"`point` must have shape \(2,\)"):
        thl.taylor_test(H, point=np.ones(3))
    with pytest.raises(ValueError, match="`steps` must be a 1-D array"):
        thl.taylor_test(H, steps=[0.1])
    with pytest.raises(ValueError, match="`steps` must be a 1-D array"):
        thl.taylor_test(H, steps=[0.1, -0.1])


# ------------------------------------------------- dense_hessian_reference


@pytest.mark.parametrize(("x", "y"), [(1.0, 1.0), (0.5, -2.0)])
def test_dense_reference_cubic_loss_is_analytic(x, y):
    w = tf.Variable([x, y], dtype=tf.float64)
    reference = dense_hessian_reference(cubic_loss, w)
    assert reference.dtype == np.float64
    assert np.allclose(reference, cubic_hessian(x, y), rtol=1e-14)


def test_dense_reference_seed_spectrum():
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    assert np.allclose(np.linalg.eigvalsh(dense_hessian_reference(cubic_loss, w)), [-6.0, 30.0])


def test_dense_reference_matches_the_hvp_engine_on_xor(xor):
    model, H = xor
    reference = dense_hessian_reference(mse_mean(model, XOR_X, XOR_Y), model.trainable_variables)
    assert reference.shape == (9, 9)
    assert np.allclose(reference, H.dense(), rtol=1e-10, atol=1e-12)


def test_dense_reference_layout_and_unused_variables():
    a = tf.Variable([[1.0, 2.0], [3.0, 4.0]], dtype=tf.float64)
    b = tf.Variable([0.5], dtype=tf.float64)
    unused = tf.Variable([7.0], dtype=tf.float64)

    def loss():
        return tf.reduce_sum(a**2 * tf.constant([[1.0, 2.0], [3.0, 4.0]], tf.float64)) + b[0] ** 3

    reference = dense_hessian_reference(loss, [a, b, unused])
    expected = np.zeros((6, 6))
    expected[:4, :4] = np.diag([2.0, 4.0, 6.0, 8.0])
    expected[4, 4] = 3.0
    assert np.array_equal(reference, expected)


def test_dense_reference_of_a_float32_model_is_float64():
    w = tf.Variable([1.0, 1.0], dtype=tf.float32)
    reference = dense_hessian_reference(cubic_loss, w)
    assert reference.dtype == np.float64
    assert np.allclose(reference, cubic_hessian(1.0, 1.0), rtol=1e-6)
