"""Dense linear algebra of the algorithms on tall (n, s) blocks, n up to ~10^6.

Two levers, both measured on a 2-core CPU shared with other processes
(n = 10^6, float64, CPU seconds):

- Orthonormal bases by Cholesky QR (a Gram matrix and a triangular update,
  both BLAS-3) repeated until orthonormal to working precision: twice for a
  well-conditioned block (CholeskyQR2), three times with a shift for an
  ill-conditioned one (shifted CholeskyQR3); Householder QR
  (:func:`numpy.linalg.qr`), whose panels are BLAS-2, is kept for
  numerically rank-deficient blocks. 0.7 s against 4.5 s for s = 33.
- BLAS on one thread while an algorithm runs: OpenBLAS's worker threads
  busy-wait after each call and compete with TensorFlow's threads and with
  each other. With two BLAS threads the same Cholesky QR took 4.1 s,
  ARPACK's work in ``eigsh`` 6x the wall time, and the Hessian-vector
  products between BLAS calls 10-15 % longer.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import scipy.linalg

# Stop repeating Cholesky QR once the Gram matrix is this close to the
# identity (entry-wise): one more pass is then orthonormal to working precision.
_NEARLY_ORTHONORMAL = 0.1
_MAX_CHOLESKY_PASSES = 4
# A later pass whose Cholesky factor has a pivot this much below its largest
# found a numerically singular Gram matrix (a rank-deficient block): it would
# amplify rounding noise into the basis, so Householder QR takes over.
_SINGULAR_PIVOT_RATIO = 1e-10
# Overwrite the caller's block only when its first Cholesky factor has at
# most this condition number: then a second pass is orthonormal to working
# precision (CholeskyQR2 needs cond(Y) below ~1e8) and Y is not needed again.
_IN_PLACE_CONDITION = 1e6


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas():
    """Run the body with the BLAS libraries (OpenBLAS, MKL, ...) on one thread.

    A no-op when threadpoolctl is not installed. Nesting is safe: each exit
    restores the limits that were in force at its entry.
    """
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


def _cholesky_upper(gram):
    try:
        return scipy.linalg.cholesky(gram, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def orthonormal_qr(Y, *, overwrite=False):
    """``Q, R`` with ``Y = Q @ R``, orthonormal `Q` (n, s) and upper triangular `R` (s, s).

    Parameters
    ----------
    Y : ndarray, shape (n, s), float64, ``s <= n``
    overwrite : bool, optional
        Whether `Y` may be overwritten: then `Q` is computed in `Y`'s memory
        (C- or Fortran-ordered; returned as `Y` or a view of it) when `Y` is
        well-conditioned (``YᵀY`` positive definite, condition number of its
        Cholesky factor at most 1e6); otherwise `Y` is copied as without
        `overwrite`. A fresh (n, s) block is expensive on
        a machine that returns freed memory to its host: the copy of the first
        pass took 1.43 s against 0.23 s in place for (1.07M, 60).

    Notes
    -----
    Each pass computes the Gram matrix ``G = QᵀQ``, its Cholesky factor
    ``F`` and ``Q ← Q F⁻¹``. The first pass adds the shift of Fukaya et al.
    (2020), ``11 (ns + s(s+1)) ε ‖Y‖_F²``, when ``YᵀY`` is not numerically
    positive definite; a pass whose ``G`` is within 0.1 of the identity is the
    last. A block that stays numerically rank deficient (the Cholesky factor
    of a later pass fails or has a pivot below 1e-10 of the largest) falls
    back to Householder QR, whose `Q` is orthonormal whatever the rank. The
    diagonal of `R` is positive except in that fallback. A single column
    is divided by its norm, in one pass.
    """
    n, s = Y.shape
    if s == 0 or s > n:
        return np.linalg.qr(Y)
    contiguous = Y.flags.c_contiguous or Y.flags.f_contiguous
    overwrite = overwrite and contiguous and Y.dtype == np.float64
    if s == 1:
        return _normalized_column(Y, overwrite)
    identity = np.eye(s)
    Q, R = Y, identity
    # Entries beyond ~1e154 overflow the Gram matrix (and below ~1e-154 it
    # underflows to zero): those blocks go to Householder QR.
    with np.errstate(over="ignore", invalid="ignore"):
        gram = _gram(Y)
    if not np.isfinite(gram).all():
        return np.linalg.qr(Y)
    for step in range(_MAX_CHOLESKY_PASSES):
        last = _nearly_orthonormal(gram, identity, step)
        factor = _cholesky_upper(gram)
        shifted = factor is None and step == 0
        if shifted:
            shift = 11 * (n * s + s * (s + 1)) * np.finfo(np.float64).eps * np.trace(gram)
            factor = _cholesky_upper(gram + shift * identity) if shift > 0 else None
        if factor is None or not np.isfinite(factor).all():
            break
        pivots = np.diag(factor)
        if step > 0 and pivots.min() < _SINGULAR_PIVOT_RATIO * pivots.max():
            break
        if step == 0 and overwrite and (shifted or np.linalg.cond(factor) > _IN_PLACE_CONDITION):
            # An ill-conditioned Y may need the Householder fallback, which
            # must start from Y itself: Q = Y F⁻¹ has lost its accuracy.
            overwrite = False
        # Q is the caller's Y in the first pass (copied unless `overwrite`),
        # ours after.
        Q = solve_right_upper(Q, factor, overwrite=overwrite or step > 0)
        R = factor @ R
        if last:
            return Q, R
        gram = _gram(Q)
    if Q is Y or not overwrite:
        return np.linalg.qr(Y)
    # Y (condition number at most 1e6) was overwritten by Q = Y R⁻¹, which
    # spans the same columns; CholeskyQR2 does not get here in exact terms.
    Q, R_fallback = np.linalg.qr(Q)
    return Q, R_fallback @ R


def _nearly_orthonormal(gram, identity, step):
    """Whether one more Cholesky pass makes the block orthonormal to working precision.

    After a pass, the Gram matrix's entries say it (the pass left an error
    of order eps cond², entry by entry). Before the first, a block may
    already be nearly orthonormal: a block that was orthonormalised and
    then projected against a basis (the second round of `orthonormal_columns`),
    so a single pass serves where ``‖G - I‖₂ < 0.1 √2`` (``cond(Y)² < 1.33``):
    the Frobenius norm of the upper triangle, all that `_gram` computes,
    bounds that spectral norm.
    """
    if step > 0:
        return np.abs(gram - identity).max() < _NEARLY_ORTHONORMAL
    return np.linalg.norm(np.triu(gram) - identity) < _NEARLY_ORTHONORMAL


def _normalized_column(y, overwrite):
    """``y / ‖y‖`` and ``[[‖y‖]]``: one pass where a block needs two.

    A single column has no orthogonality to lose: its quotient by its norm
    has unit norm to the accuracy of the norm itself, which a second pass
    cannot improve. A zero, or a norm that overflows or underflows, goes to
    Householder QR.
    """
    with np.errstate(over="ignore", under="ignore"):
        norm = float(np.linalg.norm(y))
    if not np.isfinite(norm) or norm < np.finfo(np.float64).tiny:
        return np.linalg.qr(y)
    q = y if overwrite else np.empty_like(y)
    np.divide(y, norm, out=q)
    return q, np.array([[norm]])


def _gram(Q):
    """``QᵀQ`` by ``syrk`` (half the FLOPs of a product): the upper triangle, zeros below.

    Both triangles are not needed: the Cholesky factorisation reads the
    upper one, the nearness test to the identity and the trace see the
    same entries. Q is read in its own layout (C or Fortran), not copied.
    """
    if Q.flags.f_contiguous:
        return scipy.linalg.blas.dsyrk(1.0, Q, trans=1)
    if Q.flags.c_contiguous:
        return scipy.linalg.blas.dsyrk(1.0, Q.T, trans=0)
    return scipy.linalg.blas.dsyrk(1.0, np.asfortranarray(Q), trans=1)


def solve_right_upper(Q, factor, *, overwrite):
    """``Q F⁻¹`` for upper triangular `F`, by ``trsm`` (in place when `overwrite`).

    A triangular solve costs half the FLOPs of a product with ``F⁻¹`` and
    needs no inverse: 9.5 against 17.8 ms for (101,770, 33) on one core.
    A C-ordered Q is solved as ``F⁻ᵀ Qᵀ`` on its transpose, the same memory.
    """
    if Q.flags.c_contiguous and not Q.flags.f_contiguous:
        solved = scipy.linalg.blas.dtrsm(
            1.0, factor, Q.T, side=0, lower=0, trans_a=1, overwrite_b=overwrite
        )
        return solved.T
    return scipy.linalg.blas.dtrsm(
        1.0, factor, np.asfortranarray(Q), side=1, lower=0, overwrite_b=overwrite
    )


def all_finite(X):
    """Whether every entry of the float array `X` is finite, without a temporary.

    ``np.isfinite(X).all()`` writes a boolean array of X's size first: 35 MB
    for a (1.07M, 33) block, fresh memory each call. The sum reads `X` in
    place and is finite exactly when every entry is, unless finite entries
    overflow it; only then are the entries tested one by one.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(X)):
            return True
    return bool(np.isfinite(X).all())


def frobenius_inner(X, Y):
    """``sum(X * Y)`` of two blocks of one shape, read in place.

    ``np.vdot`` flattens in C order: on Fortran-ordered blocks (the
    algorithms' own) it copies both first, 1.23 s against 0.015 s for two
    (1,070,000, 33) blocks.
    """
    if X.flags.f_contiguous and Y.flags.f_contiguous:
        return float(np.vdot(X.T, Y.T))
    if X.flags.c_contiguous and Y.flags.c_contiguous:
        return float(np.vdot(X, Y))
    return float(np.einsum("ij,ij->", X, Y))


def subtract_product(C, A, B):
    """``C -= A @ B`` in place, without a temporary for ``A @ B`` when C is Fortran-ordered.

    ``gemm`` with ``beta = 1`` writes into C: for the deflation of a
    (101,770, 33) block against a 33-column basis, 19 against 40 ms on one
    core (the product's temporary and a second pass over C saved).
    """
    if C.flags.f_contiguous and C.dtype == np.float64 and C.ndim == 2:
        scipy.linalg.blas.dgemm(-1.0, A, B, beta=1.0, c=C, overwrite_c=True)
    else:
        C -= A @ B
    return C


def orthonormal_columns(Y, against=None, *, out=None):
    """Orthonormal basis of the columns of `Y`, orthogonal to the columns of `against`.

    Without `against`, the `Q` of :func:`orthonormal_qr`. With it, two
    rounds of block Gram-Schmidt against `against` (orthonormal columns),
    each followed by :func:`orthonormal_qr`, so that orthogonality holds to
    working precision even when most of `Y` lies in the span of `against`.

    `out`, a float64 array of `Y`'s shape (C- or Fortran-ordered, or `Y`
    itself), receives the basis and is returned: the whole computation then
    runs in its memory, without a fresh (n, s) block.
    """
    if out is None:
        # Our own Fortran-ordered copy: projected in place by gemm (no
        # (n, s) temporaries for the product and the difference).
        Q = np.array(Y, dtype=np.float64, order="F")
    else:
        if out is not Y:
            out[...] = Y
        Q = out
    if against is not None and against.shape[1] > 0:
        for _ in range(2):
            subtract_product(Q, against, against.T @ Q)
            Q = orthonormal_qr(Q, overwrite=True)[0]
    else:
        Q = orthonormal_qr(Q, overwrite=True)[0]
    if out is None:
        return Q
    if not _same_memory(Q, out):
        out[...] = Q
    return out


def _same_memory(X, Y):
    """Whether `X` and `Y` are the same entries of memory in the same layout."""
    return (
        X.shape == Y.shape
        and X.strides == Y.strides
        and X.__array_interface__["data"][0] == Y.__array_interface__["data"][0]
    )
