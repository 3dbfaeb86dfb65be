"""MINRES for symmetric, possibly indefinite systems, recording negative curvature.

Separate from CG: MINRES does not stop on negative curvature, it keeps
solving and only records the first certificate, which it reads off the CG
pivots of its own Lanczos process (:class:`_CgPivots`).
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from ._inputs import check_system
from ._result import NegativeCurvature, SolveResult

__all__ = ["minres"]


def _iv_minres(A, b, x0, rtol, atol, shift, maxiter, M):
    A, b, x0, tol, maxiter, M = check_system(A, b, x0, rtol, atol, maxiter, M, 5)
    return A, b, x0, tol, maxiter, M, _checks.real(shift, "shift")


def minres(A, b, x0=None, *, rtol=1e-5, atol=0.0, shift=0.0, maxiter=None, M=None, callback=None):
    """Solve ``(A - shift I) x = b`` by MINRES, recording negative curvature.

    The minimum residual method of Paige and Saunders [1]_ for a symmetric,
    possibly indefinite or singular operator. It does not stop on negative
    curvature; it reports the first certificate it meets: the Lanczos
    process MINRES runs on is the one of CG, and the CG search direction
    :math:`p_k` (a combination of the Lanczos vectors, with
    :math:`p_k^T A p_k` the k-th pivot of the :math:`LDL^T` factorisation of
    the Lanczos matrix) is recorded at the first non-positive pivot. That is
    where :func:`cg` would stop, at no extra product.

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator.
    b : ndarray, shape (n,) or (n, 1)
        Right-hand side (not modified).
    x0 : ndarray, shape (n,) or (n, 1), optional
        Initial guess (not modified); zero by default.
    rtol, atol : float, optional
        Converged when the residual norm is at most
        :math:`\\max(atol, rtol \\|b\\|)` (SciPy's ``minres`` instead tests
        :math:`\\|r\\| / (\\|A\\| \\|x\\|)`, which can stop with a large
        residual), or when the residual is numerically orthogonal to the
        range of A, :math:`\\|A r\\| \\le rtol \\|A\\| \\|r\\|` (a least-squares
        solution of an inconsistent singular system).
    shift : float, optional
        Solve with :math:`A - shift\\, I`; curvature is measured for it too.
    maxiter : int, optional
        Maximum number of iterations (one product each), 5 n by default.
    M : LinearOperator, ndarray or sparse array, shape (n, n), optional
        Symmetric positive definite preconditioner approximating
        :math:`A^{-1}`.
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration.

    Returns
    -------
    SolveResult
        Unpacks as ``x, info``; ``info`` is 0 or the iteration count (never
        -2); ``negative_curvature`` holds the first certificate.

    Notes
    -----
    On an inconsistent singular system the result is a least-squares
    solution, but possibly one of very large norm, as with SciPy's
    ``minres`` (MINRES-QLP would give the minimum-norm one).

    References
    ----------
    .. [1] C. C. Paige, M. A. Saunders, "Solution of sparse indefinite
       systems of linear equations", SIAM J. Numer. Anal. 12(4), 1975.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> H = np.array([[12.0, 18.0], [18.0, 12.0]])
    >>> b = np.array([1.0, 2.0])
    >>> result = thl.minres(H, b, rtol=1e-12)
    >>> result.info, np.allclose(result.x, np.linalg.solve(H, b))
    (0, True)
    >>> d = result.negative_curvature.direction
    >>> bool(d @ H @ d <= 0)
    True
    """
    with _checks.collective(
        A,
        "minres",
        b=b,
        x0=x0,
        rtol=rtol,
        atol=atol,
        shift=shift,
        maxiter=maxiter,
        M=M,
        callback=callback,
    ):
        A, b, x0, tol, maxiter, M, shift = _iv_minres(A, b, x0, rtol, atol, shift, maxiter, M)
        return _minres(A, b, x0, tol, rtol, shift, maxiter, M, callback)


def _minres(A, b, x0, tol, rtol, shift, maxiter, M, callback):
    n = b.shape[0]
    n_matvec = 0
    if x0 is None or not np.any(x0):
        x, r1 = np.zeros(n), b.copy()
    else:
        x, r1 = x0.copy(), b - A.matvec(x0)
        n_matvec += 1
    y, beta1 = _preconditioned(r1, M)
    if beta1 == 0.0 or np.sqrt(float(r1 @ r1)) <= tol:
        return SolveResult(x, 0, None, n_matvec, float(np.linalg.norm(r1)), 0)

    eps = np.finfo(np.float64).eps
    beta, old_beta = beta1, 0.0
    r2 = r1
    # Paige-Saunders: rotations (cs, sn), their carried quantities, and the
    # three most recent search vectors w.
    cs, sn, dbar, epsln, phibar, tnorm2 = -1.0, 0.0, 0.0, 0.0, beta1, 0.0
    w, w2 = np.zeros(n), np.zeros(n)
    pivots = _CgPivots()
    info = maxiter
    for iteration in range(maxiter):
        v = y / beta
        y = A.matvec(v) - shift * v
        n_matvec += 1
        if iteration > 0:
            y = y - (beta / old_beta) * r1
        alpha = float(v @ y)
        y = y - (alpha / beta) * r2
        r1, r2 = r2, y
        old_beta = beta
        y, beta = _preconditioned(r2, M)
        tnorm2 += alpha**2 + old_beta**2 + beta**2
        pivots.update(v, alpha, old_beta, iteration)

        old_epsln = epsln
        delta = cs * dbar + sn * alpha
        gbar = sn * dbar - cs * alpha
        epsln = sn * beta
        dbar = -cs * beta
        root = np.hypot(gbar, dbar)
        gamma = max(np.hypot(gbar, beta), eps)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        w = (v - old_epsln * w1 - delta * w2) / gamma
        x = x + phi * w
        if callback is not None:
            callback(x)

        # root = ‖A r‖ / ‖r‖ for the previous residual; beta = 0: the Krylov
        # space is invariant and x is its best solution.
        a_norm = np.sqrt(tnorm2)
        if phibar <= tol or root <= rtol * a_norm or beta <= eps * a_norm:
            info = 0
            break
    return SolveResult(x, info, pivots.certificate, n_matvec, float(phibar), iteration + 1)


def _preconditioned(r, M):
    """``M r`` and the M-norm of `r`, refusing an M that is not positive definite."""
    y = r if M is None else M.matvec(r)
    squared = float(r @ y)
    if squared < 0:
        raise ValueError("`M` must be positive definite: found rᵀ M r < 0.")
    return y, np.sqrt(squared)


class _CgPivots:
    """The CG pivots of MINRES's Lanczos process, up to the first non-positive one.

    The k-th pivot of the :math:`LDL^T` factorisation of the Lanczos matrix
    is :math:`p_k^T A p_k` for the CG search direction :math:`p_k`; both
    follow from the Lanczos coefficients by a two-term recurrence, so the
    certificate costs no product.
    """

    def __init__(self):
        self.pivot = self.direction = self.certificate = None

    def update(self, v, alpha, beta, iteration):
        """Take Lanczos vector `v`, ``alpha = T[k, k]`` and ``beta = T[k, k-1]``."""
        if self.certificate is not None:
            return
        if self.pivot is None:
            self.pivot, self.direction = alpha, v.copy()
        else:
            ratio = beta / self.pivot
            self.pivot = alpha - ratio * beta
            self.direction = v - ratio * self.direction
        if self.pivot <= 0.0:
            curvature = self.pivot / float(self.direction @ self.direction)
            self.certificate = NegativeCurvature(self.direction, curvature, iteration)
