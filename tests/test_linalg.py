"""Cholesky QR and the BLAS thread limit of the algorithms, against NumPy's Householder QR."""

import numpy as np
import pytest
import threadpoolctl

from tfhess_linop import _linalg

N, S = 600, 24


def _with_singular_values(values, seed=0):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((N, len(values))))[0]
    V = np.linalg.qr(rng.standard_normal((len(values), len(values))))[0]
    return (U * values) @ V


def _nearly_orthonormal(perturbation=1e-3, seed=3):
    """An orthonormal (N, S) block plus a small perturbation (cond close to 1)."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((N, S)))[0]
    return Q + perturbation * rng.standard_normal((N, S)) / np.sqrt(N)


def _blocks():
    rng = np.random.default_rng(1)
    gaussian = rng.standard_normal((N, S))
    duplicate = gaussian.copy()
    duplicate[:, 3] = duplicate[:, 7]
    zero_column = gaussian.copy()
    zero_column[:, 5] = 0.0
    yield "gaussian", gaussian
    yield "nearly orthonormal", _nearly_orthonormal()
    for exponent in (4, 8, 12, 16, 24):
        yield f"cond 1e{exponent}", _with_singular_values(np.logspace(0, -exponent, S))
    yield "rank 3", gaussian[:, :3] @ rng.standard_normal((3, S))
    yield "duplicate column", duplicate
    yield "zero column", zero_column
    yield "zero", np.zeros((N, S))
    yield "tiny scale", gaussian * 1e-200
    yield "huge scale", gaussian * 1e160
    yield "square", rng.standard_normal((S, S))
    yield "one column", gaussian[:, :1]
    yield "one zero column", np.zeros((N, 1))
    yield "one tiny column", gaussian[:, :1] * 1e-200
    yield "one huge column", gaussian[:, :1] * 1e160


_LAYOUTS = {
    "C": np.ascontiguousarray,
    "F": np.asfortranarray,
    "strided": lambda Y: np.repeat(Y, 2, axis=0)[::2],
}


@pytest.mark.parametrize("layout", list(_LAYOUTS))
@pytest.mark.parametrize(("name", "Y"), list(_blocks()), ids=[name for name, _ in _blocks()])
def test_orthonormal_qr_is_a_qr_factorisation(name, Y, layout):
    # The Gram matrices and triangular solves read C, Fortran and strided
    # blocks each in their own way; the input is never written.
    Y = _LAYOUTS[layout](Y)
    given = Y.copy()
    Q, R = _linalg.orthonormal_qr(Y)
    np.testing.assert_array_equal(Y, given)
    s = Y.shape[1]
    assert Q.shape == Y.shape and R.shape == (s, s)
    np.testing.assert_allclose(Q.T @ Q, np.eye(s), rtol=0, atol=20 * s * np.finfo(float).eps)
    np.testing.assert_array_equal(np.tril(R, -1), 0.0)
    # Norms relative to the largest entry, which neither overflow nor underflow.
    largest = max(np.abs(Y).max(), np.finfo(float).tiny)
    residual = np.linalg.norm((Y - Q @ R) / largest)
    assert residual <= 20 * s * np.finfo(float).eps * np.linalg.norm(Y / largest)


@pytest.mark.parametrize("layout", list(_LAYOUTS))
@pytest.mark.parametrize(("name", "Y"), list(_blocks()), ids=[name for name, _ in _blocks()])
def test_orthonormal_qr_overwrite_is_a_qr_factorisation_of_the_input(name, Y, layout):
    # Overwriting Y changes where Q lives, not what it is: the same
    # factorisation of the original block, also where a rank-deficient block
    # falls back to Householder QR after a first pass already wrote into Y.
    Y = _LAYOUTS[layout](Y)
    given = Y.copy()
    Q, R = _linalg.orthonormal_qr(Y, overwrite=True)
    Q_copy, R_copy = _linalg.orthonormal_qr(given.copy())
    s = Y.shape[1]
    np.testing.assert_allclose(Q.T @ Q, np.eye(s), rtol=0, atol=20 * s * np.finfo(float).eps)
    np.testing.assert_array_equal(np.tril(R, -1), 0.0)
    largest = max(np.abs(given).max(), np.finfo(float).tiny)
    residual = np.linalg.norm((given - Q @ R) / largest)
    assert residual <= 20 * s * np.finfo(float).eps * np.linalg.norm(given / largest)
    if layout == "strided":
        # No BLAS call writes a strided block in place: it is left alone.
        np.testing.assert_array_equal(Y, given)
    if name.startswith("cond 1e") and int(name[7:]) >= 8:
        # Too ill-conditioned to be overwritten (it may need Householder QR).
        np.testing.assert_array_equal(Y, given)
    if name in ("gaussian", "cond 1e4") and layout != "strided":
        # Well-conditioned: in Y's memory, and the same operations.
        assert np.shares_memory(Q, Y)
        # In place or not, the kernels round alike up to the last bits.
        np.testing.assert_allclose(Q, Q_copy, rtol=0, atol=1e-14)
        np.testing.assert_allclose(R, R_copy, rtol=0, atol=1e-13 * np.abs(R_copy).max())


@pytest.mark.parametrize("against", [False, True], ids=["alone", "against a basis"])
@pytest.mark.parametrize("target", ["column slice", "Y itself (F)", "Y itself (C)"])
def test_orthonormal_columns_into_out(target, against):
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.standard_normal((N, 10)))[0] if against else None
    Y = rng.standard_normal((N, 6))
    expected = _linalg.orthonormal_columns(Y, basis)
    if target == "column slice":
        holder = np.full((N, 15), 7.0, order="F")
        out = holder[:, 4:10]
    else:
        Y = np.array(Y, order="F" if "(F)" in target else "C")
        out = Y
    returned = _linalg.orthonormal_columns(Y, basis, out=out)
    assert returned is out
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-14)
    if target == "column slice":
        # The columns around `out` are not touched.
        np.testing.assert_array_equal(holder[:, :4], 7.0)
        np.testing.assert_array_equal(holder[:, 10:], 7.0)


@pytest.mark.parametrize("exponent", [0, 6])
def test_orthonormal_qr_equals_householder_up_to_signs(exponent):
    Y = _with_singular_values(np.logspace(0, -exponent, S), seed=2)
    Q, R = _linalg.orthonormal_qr(Y)
    Q_ref, R_ref = np.linalg.qr(Y)
    signs = np.sign(np.diag(R_ref))
    assert np.all(np.diag(R) > 0)
    tolerance = 1e-13 * 10.0**exponent
    np.testing.assert_allclose(R, signs[:, None] * R_ref, rtol=0, atol=tolerance)
    np.testing.assert_allclose(Q, Q_ref * signs, rtol=0, atol=tolerance)


@pytest.mark.parametrize(("perturbation", "passes"), [(1e-3, 1), (3e-2, 1), (1.0, 2)])
def test_a_nearly_orthonormal_block_takes_one_cholesky_pass(perturbation, passes, monkeypatch):
    # A block within 0.1 of orthonormal (in the Gram matrix's norm) is
    # orthonormal to working precision after one pass; others take two.
    factors = []
    original = _linalg._cholesky_upper
    monkeypatch.setattr(_linalg, "_cholesky_upper", lambda G: factors.append(1) or original(G))
    Y = _nearly_orthonormal(perturbation)
    Q, R = _linalg.orthonormal_qr(Y)
    assert len(factors) == passes
    eps = np.finfo(float).eps
    np.testing.assert_allclose(Q.T @ Q, np.eye(S), rtol=0, atol=4 * S * eps)
    assert np.linalg.norm(Y - Q @ R) <= 4 * S * eps * np.linalg.norm(Y)


@pytest.mark.parametrize("order", ["C", "F"])
def test_subtract_product_in_place(order):
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((N, S)), rng.standard_normal((S, 5))
    C = np.array(rng.standard_normal((N, 5)), order=order)
    expected = C - A @ B
    out = _linalg.subtract_product(C, A, B)
    assert out is C
    np.testing.assert_allclose(C, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize(("first", "second"), [("C", "C"), ("F", "F"), ("C", "F"), ("F", "C")])
def test_frobenius_inner_in_any_layout(first, second):
    rng = np.random.default_rng(4)
    X = np.array(rng.standard_normal((N, 6)), order=first)
    Y = np.array(rng.standard_normal((N, 6)), order=second)
    expected = float(np.sum(X * Y))
    assert abs(_linalg.frobenius_inner(X, Y) - expected) <= 1e-12 * abs(expected)
    strided = X[::2, ::3]
    reference = float(np.sum(strided * Y[::2, ::3]))
    assert abs(_linalg.frobenius_inner(strided, Y[::2, ::3]) - reference) <= 1e-12 * abs(reference)


def test_orthonormal_columns_against_a_basis():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((N, 10)))[0]
    # Mostly inside span(basis): the remainder is 1e-10 of the block.
    Y = basis @ rng.standard_normal((10, 6)) + 1e-10 * rng.standard_normal((N, 6))
    Q = _linalg.orthonormal_columns(Y, basis)
    eps = np.finfo(float).eps
    np.testing.assert_allclose(Q.T @ Q, np.eye(6), rtol=0, atol=100 * eps)
    np.testing.assert_allclose(basis.T @ Q, 0.0, rtol=0, atol=100 * eps)
    residual = Y - basis @ (basis.T @ Y)
    # The remainder is only known to rounding of the projection, ~eps * ||Y||.
    np.testing.assert_allclose(Q @ (Q.T @ residual), residual, rtol=0, atol=1e-14)


def _blas_threads():
    return [
        entry["num_threads"]
        for entry in threadpoolctl.threadpool_info()
        if entry["user_api"] == "blas"
    ]


def test_single_threaded_blas_limits_and_restores():
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        assert before and all(threads == 2 for threads in before)
        with _linalg.single_threaded_blas():
            inside = _blas_threads()
            assert all(threads == 1 for threads in inside)
            with _linalg.single_threaded_blas():
                pass
            assert _blas_threads() == inside
        assert _blas_threads() == before


def test_all_finite_without_a_temporary():
    rng = np.random.default_rng(2)
    X = np.asfortranarray(rng.standard_normal((50, 4)))
    assert _linalg.all_finite(X) and _linalg.all_finite(np.empty((0, 3)))
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[17, 2] = bad
        assert not _linalg.all_finite(Y)
    # Finite entries whose sum overflows are finite.
    huge = np.full((3, 3), np.finfo(np.float64).max)
    assert _linalg.all_finite(huge)
    # Infinities of both signs sum to NaN: not finite either.
    assert not _linalg.all_finite(np.array([np.inf, -np.inf]))
