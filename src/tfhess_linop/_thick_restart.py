"""Thick-restart Lanczos for a few extreme eigenpairs of a symmetric operator.

The method of Wu and Simon (2000): Lanczos steps with full
reorthogonalisation build an orthonormal basis ``V`` of ``ncv`` vectors and
the projection ``T = V A Vᵀ``; at each restart the wanted Ritz vectors and a
few more are kept, the residual vector is appended, and the steps go on from
there. ``T`` is then an arrowhead matrix (the kept Ritz values on the
diagonal, coupled to the residual vector) followed by a tridiagonal one.
Mathematically this is ARPACK's implicitly restarted Lanczos method with
exact shifts; here the restart is one small matrix product on the basis
instead of ARPACK's sequence of Givens rotations over it, which reads and
writes the whole basis once per shift.

The basis is one preallocated ``(ncv + 1, n)`` array with contiguous rows,
and every operation on it is a BLAS-2/3 call over its rows. With ``tol = 0``
each new vector is orthogonalised against the whole basis (one or two
passes over it per step: the projection, and the subtraction when that is
not negligible). With ``tol > 0`` the reorthogonalisation is partial
(`_semi_orthogonal`): a pass runs only when estimates of the inner products
say the basis would stop being semi-orthogonal at the accuracy asked, so
most steps are the product and a few vector operations on one preallocated
work vector. Everything is deterministic (eigsh runs it with BLAS on one thread, and the
fresh starts are seeded), so equal products give bit-identical results on
every MPI rank.

References: K. Wu and H. Simon, "Thick-restart Lanczos method for large
symmetric eigenvalue problems", SIAM J. Matrix Anal. Appl. 22 (2000);
H. D. Simon, "The Lanczos algorithm with partial reorthogonalization",
Math. Comp. 42 (1984).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.linalg.blas import daxpy, dgemv
from scipy.sparse.linalg import ArpackNoConvergence

from ._semi_orthogonal import Overlaps

__all__ = ["HANDLED", "kept_vectors", "products_bound", "thick_restart_lanczos"]

HANDLED = ("LA", "SA", "LM", "BE")

# ARPACK's machine precision (LAPACK's dlamch("E"), the unit roundoff) and
# the floor of its relative convergence test, eps^(2/3).
_EPS = np.finfo(np.float64).eps / 2
_EPS23 = _EPS ** (2 / 3)
# A new vector whose inner products with the basis are all below this
# fraction of its norm is orthogonal enough: the subtraction, a second pass
# over the basis, is skipped. It was in 65-80 % of the steps on Hessian-like
# spectra (n = 1e5), with Ritz vectors still orthonormal to 2e-14.
_ORTHOGONAL = 1e-14
# DGKS: orthogonalise once more when a pass cut the norm below 1/sqrt(2).
_DGKS = 1 / np.sqrt(2)
# A new Lanczos vector whose norm is below this multiple of eps * |A| is
# rounding noise: the basis spans an invariant subspace.
_NOISE = 8 * np.finfo(np.float64).eps
# Columns of the basis per block of the in-place restart: the (l, block)
# scratch stays in cache.
_RESTART_BLOCK = 4096
# Ritz vectors kept at a restart beyond the k wanted ones: this fraction of
# the ncv - k free ones, plus one per converged wanted pair (ARPACK's rule).
_EXTRA_FRACTION = 0.2


def kept_vectors(k, ncv, converged):
    """Ritz vectors kept at a restart, ``k <= l < ncv``, with `converged` wanted pairs done.

    More kept vectors converge faster per restart but leave fewer new steps
    per restart. Measured on 88 Hessian-like spectra (n = 1e4 and 1e5, every
    `which`, k = 1, 3, 6, tol = 0 and 1e-6, ncv = k + 15), products summed:
    ARPACK 12,899; this rule 12,244. In a run with an earlier version
    (other rounding; the "SA" counts move by a few percent with it): this
    rule 12,457, keeping only k + converged (ARPACK's rule) 13,296, plus 30 %
    of the free vectors 12,631, a fixed 30 % without the converged ones
    14,565.
    """
    extra = min(converged, (ncv - k) // 2) + int(_EXTRA_FRACTION * (ncv - k))
    return min(ncv - 1, k + extra)


def products_bound(k, ncv, maxiter):
    """The most products `thick_restart_lanczos` takes (k, ncv, `maxiter` restarts)."""
    return ncv + maxiter * (ncv - kept_vectors(k, ncv, 0))


def _priority(theta, which):
    """Indices of the ascending Ritz values `theta`, the most wanted first."""
    m = theta.size
    if which == "LA":
        return np.arange(m - 1, -1, -1)
    if which == "SA":
        return np.arange(m)
    if which == "LM":
        return np.argsort(-np.abs(theta), kind="stable")
    # BE: alternately from the high and the low end, starting high, so that
    # the first k hold one more from the high end when k is odd (ARPACK's).
    order = np.empty(m, dtype=np.intp)
    order[0::2] = np.arange(m - 1, m - 1 - (m + 1) // 2, -1)
    order[1::2] = np.arange(m // 2)
    return order


def _converged(theta, bounds, tol):
    """ARPACK's dsconv: Ritz estimate below `tol` relative to |theta| (or eps^(2/3))."""
    return bounds <= tol * np.maximum(_EPS23, np.abs(theta))


class _Basis:
    """Orthonormal Lanczos rows ``V[:m]``, the residual ``V[m]``, and ``T``."""

    def __init__(self, n, ncv, v0):
        self.V = np.empty((ncv + 1, n))
        self.T = np.zeros((ncv + 1, ncv + 1))
        self.V[0] = v0 / np.linalg.norm(v0)
        self.work = np.empty(n)
        self.overlaps = Overlaps(n, ncv + 1, ncv)
        self.restarts_drawn = 0
        # The largest ||A v|| met (from alpha, beta and the couplings): the
        # scale of the rounding errors of a step, below which a new vector is
        # noise.
        self.scale = 0.0

    def project(self, rows, w):
        """``V[:rows] @ w`` by BLAS (the rows as the columns of a Fortran array)."""
        return dgemv(1.0, self.V[:rows].T, w, trans=1)

    def subtract(self, rows, h, w):
        """``w -= V[:rows]ᵀ h``, in place (`w` is contiguous float64)."""
        dgemv(-1.0, self.V[:rows].T, h, beta=1.0, y=w, overwrite_y=1)

    def orthogonalise(self, rows, w, norm):
        """Make `w` orthogonal to ``V[:rows]`` in place; returns (norm, independent, h).

        Classical Gram-Schmidt, with a second pass by the DGKS test; a pass
        whose inner products are all negligible (`_ORTHOGONAL`) ends without
        its subtraction. Not independent: two passes each removed most of the
        vector, which lies in span(V[:rows]) to working precision (an
        invariant subspace). `h` holds the inner products the first pass
        found.
        """
        first = None
        for _ in range(2):
            h = self.project(rows, w)
            first = h if first is None else first
            if np.abs(h).max() <= _ORTHOGONAL * norm:
                return norm, True, first
            self.subtract(rows, h, w)
            before, norm = norm, float(np.linalg.norm(w))
            if norm >= _DGKS * before:
                return norm, True, first
        return norm, False, first

    def fresh_start(self, j):
        """Put a deterministic unit vector orthogonal to ``V[:j]`` in ``V[j]``."""
        while True:
            self.restarts_drawn += 1
            rng = np.random.default_rng([1, self.restarts_drawn])
            w = self.work
            w[:] = rng.standard_normal(w.size)
            norm, independent, _ = self.orthogonalise(j, w, float(np.linalg.norm(w)))
            if independent:
                np.divide(w, norm, out=self.V[j])
                self.overlaps.set_row(j, self.overlaps.rounding)
                return

    def restart(self, m, keep, theta, S, beta):
        """Replace ``V[:l]`` by the Ritz vectors ``S[:, keep]``, ``V[l]`` by the residual.

        ``T`` becomes the arrowhead of the kept Ritz values, coupled to the
        residual vector by ``beta`` times the last components of theirs.

        Done in blocks of columns, so that only an ``(l + 1, block)`` scratch
        array is needed beside the basis. The inner products of the new rows
        are summed from the blocks while they are in cache: they are the
        estimates the steps go on from, and a residual vector that lost its
        orthogonality to the Ritz vectors is orthogonalised again.
        """
        kept, n = keep.size, self.V.shape[1]
        coefficients = np.ascontiguousarray(S[:, keep].T)
        scratch = np.empty((kept + 1, min(_RESTART_BLOCK, n)))
        gram = np.zeros((kept + 1, kept + 1))
        for start in range(0, n, _RESTART_BLOCK):
            block = slice(start, min(start + _RESTART_BLOCK, n))
            out = scratch[:, : block.stop - start]
            np.matmul(coefficients, self.V[:m, block], out=out[:kept])
            out[kept] = self.V[m, block]
            gram += out @ out.T
            self.V[:kept, block] = out[:kept]
        self.V[kept] = self.V[m]
        overlaps = self.overlaps
        overlaps.restart(gram)
        if np.abs(gram[kept, :kept]).max() > max(overlaps.level, overlaps.rounding):
            w = self.work
            w[:] = self.V[kept]
            norm, _, _ = self.orthogonalise(kept, w, float(np.linalg.norm(w)))
            np.divide(w, norm, out=self.V[kept])
            overlaps.set_row(kept, overlaps.rounding)
        self.T[:] = 0.0
        self.T[np.arange(kept), np.arange(kept)] = theta[keep]
        self.T[kept, :kept] = self.T[:kept, kept] = beta * S[m - 1, keep]


def _step(A, basis, j, arrow):
    """Lanczos step `j`: ``T[j, j]``, ``beta = T[j, j + 1]`` and ``V[j + 1]``; returns beta.

    ``A V[j]`` is orthogonalised first against its known couplings (the
    arrowhead ``T[:j, j]`` on the first step after a restart, else
    ``V[j - 1]``) and ``V[j]``, then against the whole basis when the
    estimates of its inner products ask for it (always when ``tol = 0``). ``beta = 0``
    reports an invariant subspace: the new vector lies in the span of the
    basis to working precision, or the basis spans the whole space.
    """
    V, T, w = basis.V, basis.T, basis.work
    # In place on one work vector with BLAS-1/2 calls: numpy's temporaries
    # of n elements would each be a fresh allocation and its page faults.
    _product_into(A, V[j], w)
    if arrow:
        basis.subtract(j, T[:j, j], w)
    elif j > 0:
        daxpy(V[j - 1], w, a=-T[j - 1, j])
    alpha = float(V[j] @ w)
    daxpy(V[j], w, a=-alpha)
    T[j, j] = alpha
    beta = float(np.linalg.norm(w))
    # A NaN or inf in the product reaches alpha or beta (inf - inf is NaN).
    if not np.isfinite(alpha + beta):
        raise ValueError(f"`A` returned a non-finite product (NaN or inf) at step {j + 1}.")
    # |A V[j]|, from its parts along the basis and the new vector: the scale
    # of the rounding errors of the step, without a pass over the product.
    basis.scale = max(basis.scale, float(np.sqrt(alpha**2 + beta**2 + T[:j, j] @ T[:j, j])))
    independent = beta > _NOISE * basis.scale
    if independent:
        beta, independent = _reorthogonalise(basis, j, beta)
    if j + 1 == V.shape[1] or not independent or beta <= _NOISE * basis.scale:
        beta = 0.0
    else:
        np.divide(w, beta, out=V[j + 1])
    T[j, j + 1] = T[j + 1, j] = beta
    return beta


def _reorthogonalise(basis, j, beta):
    """Orthogonalise the new vector of step `j` against the basis if the estimates ask it.

    Returns its (norm, independent), as `_Basis.orthogonalise`.
    """
    overlaps, w = basis.overlaps, basis.work
    estimate = overlaps.estimate(basis.T, j, beta, basis.scale)
    if not overlaps.needs_pass(j, estimate):
        overlaps.skipped(j, estimate)
        return beta, True
    norm, independent, removed = basis.orthogonalise(j + 1, w, beta)
    overlaps.measured(j, estimate, removed, beta)
    return norm, independent


def _product_into(A, v, w):
    """``w[:] = A @ v``; a `HessianOperator` writes its product into `w` itself."""
    into = getattr(A, "_matmat_into", None)
    if into is not None:
        into(v[:, None], w[:, None])
    else:
        np.copyto(w, np.asarray(A.matvec(v), dtype=np.float64).reshape(-1))


def thick_restart_lanczos(A, k, which, v0, ncv, tol, maxiter, return_eigenvectors):
    """`k` eigenpairs of the symmetric `A` at end `which`, as ``scipy.sparse.linalg.eigsh``.

    The Ritz estimates are tested after every step (an eigendecomposition
    of the small ``T``, microseconds), so the solve stops at the first
    product after which all `k` wanted Ritz pairs pass ARPACK's test; the
    basis restarts when it holds `ncv` vectors.

    Parameters
    ----------
    A : LinearOperator, shape (n, n)
        Symmetric; applied by ``A.matvec`` only, one vector per step.
    k : int
        Number of eigenpairs, ``0 < k < ncv``.
    which : {"LA", "SA", "LM", "BE"}
    v0 : ndarray, shape (n,)
        Nonzero start vector (not modified).
    ncv : int
        Basis size, ``k < ncv <= n``.
    tol : float
        Relative accuracy of the Ritz estimates; 0 means machine precision.
    maxiter : int or None
        Restarts, as ARPACK's update iterations (SciPy's `maxiter`: the
        first basis and `maxiter` restarts); None means ``10 n``, SciPy's
        default.
    return_eigenvectors : bool

    Returns
    -------
    w : ndarray, shape (k,)
        Ascending eigenvalues.
    v : ndarray, shape (n, k)
        Orthonormal eigenvectors (only with `return_eigenvectors`).

    Raises
    ------
    scipy.sparse.linalg.ArpackNoConvergence
        After `maxiter` restarts, with the converged eigenpairs.
    """
    n = A.shape[0]
    tol = _EPS if tol == 0 else tol
    maxiter = 10 * n if maxiter is None else maxiter
    if not np.any(v0):
        raise ValueError("`v0` must be a nonzero vector.")
    basis = _Basis(n, ncv, v0)
    T = basis.T
    j, arrow, restarts, deferred = 0, False, 0, False
    while True:
        beta = _step(A, basis, j, arrow)
        m = j + 1
        if beta == 0.0 and m < n:
            # An invariant subspace. Its Ritz pairs are exact, but the wanted
            # eigenvalues may lie outside it (a repeated eigenvalue has one
            # Ritz value per start vector): go on from a fresh start, as
            # ARPACK does, and test only when the basis is full, as ARPACK.
            if m < ncv:
                basis.fresh_start(m)
                j, arrow, deferred = m, False, True
                continue
        if (m > k and not deferred) or m == ncv or m == n:
            theta, S = scipy.linalg.eigh(T[:m, :m], check_finite=False, driver="evd")
            order = _priority(theta, which)
            wanted = order[:k]
            converged = _converged(theta[wanted], np.abs(beta * S[m - 1, wanted]), tol)
            basis.overlaps.allow(tol, theta[wanted], basis.scale)
            if converged.all() or m == n:
                return _result(basis, m, theta, S, wanted, return_eigenvectors)
        if m < ncv:
            j, arrow = m, False
            continue
        if restarts == maxiter:
            break
        restarts += 1
        kept = kept_vectors(k, ncv, int(converged.sum()))
        basis.restart(m, order[:kept], theta, S, beta)
        if beta == 0.0:
            basis.fresh_start(kept)
        j, arrow, deferred = kept, True, False
    found = wanted[converged]
    values, vectors = _result(basis, m, theta, S, found, True)
    raise ArpackNoConvergence(
        f"No convergence ({maxiter + 1} iterations, {found.size}/{k} eigenvectors converged)",
        values,
        vectors,
    )


def _result(basis, m, theta, S, chosen, return_eigenvectors):
    """Ascending Ritz values ``theta[chosen]`` and, if asked, their Ritz vectors (n, c)."""
    chosen = chosen[np.argsort(theta[chosen], kind="stable")]
    values = theta[chosen]
    if not return_eigenvectors:
        return values
    return values, _orthonormalised((S[:, chosen].T @ basis.V[:m]).T)


def _orthonormalised(X):
    """``X (XᵀX)^(-1/2)``: the nearest orthonormal columns (Löwdin's).

    The Ritz vectors of a semi-orthogonal basis have inner products up to
    its level. Those of two pairs ``(θ_i, x_i)`` and ``(θ_j, x_j)`` are
    bounded by their residuals over ``|θ_i - θ_j|``, so the correction,
    which moves ``x_i`` along ``x_j`` by half that inner product, changes a
    residual by at most the size of the residuals themselves.
    """
    gram = X.T @ X
    g, U = np.linalg.eigh(gram)
    return X @ ((U / np.sqrt(g)) @ U.T)
