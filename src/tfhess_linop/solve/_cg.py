"""Conjugate gradients that stop on negative curvature (Steihaug's test).

:func:`cg` is the public solver; :func:`conjugate_gradient` is its iteration
on checked arguments, which :func:`~tfhess_linop.pcg` runs too, with its
Nyström preconditioner and the products of the sketch already counted.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from ._inputs import check_system
from ._result import NEGATIVE_CURVATURE_INFO, NegativeCurvature, SolveResult

__all__ = ["cg", "conjugate_gradient"]


def cg(A, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, callback=None):
    """Solve ``A x = b`` by conjugate gradients, stopping on negative curvature.

    The conjugate gradient method for a symmetric operator, with Steihaug's
    test [1]_: at the first search direction d with :math:`d^T A d \\le 0`
    (A is not positive definite on the Krylov space), CG stops and returns
    its last iterate with ``info = -2`` and d in ``negative_curvature``. On a
    positive definite operator this never happens and CG is SciPy's.

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
        Converged when :math:`\\|b - A x\\| \\le \\max(atol, rtol \\|b\\|)`.
    maxiter : int, optional
        Maximum number of iterations (one product each), 10 n by default.
    M : LinearOperator, ndarray or sparse array, shape (n, n), optional
        Symmetric positive definite preconditioner approximating
        :math:`A^{-1}`, e.g. :func:`nystrom_preconditioner`.
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration that updates x.

    Returns
    -------
    SolveResult
        Unpacks as ``x, info``; also ``negative_curvature``, ``n_matvec``,
        ``residual_norm``, ``n_iter``.

    Notes
    -----
    Like :func:`scipy.sparse.linalg.cg`, ``maxiter=1`` makes one iteration,
    calls `callback` once and returns ``info = 1`` unless that iteration
    converged. Unlike SciPy, the residual is also tested after the last
    iteration, so convergence at exactly `maxiter` iterations gives 0.

    References
    ----------
    .. [1] T. Steihaug, "The conjugate gradient method and trust regions in
       large scale optimization", SIAM J. Numer. Anal. 20(3), 1983.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> b = np.array([1.0, 2.0])
    >>> x, info = thl.cg(A, b, rtol=1e-12)
    >>> info, np.allclose(x, np.linalg.solve(A, b))
    (0, True)

    On the indefinite Hessian of :math:`2x^3y^3` at (1, 1) (eigenvalues 30
    and -6), CG stops and returns a direction of negative curvature:

    >>> H = np.array([[12.0, 18.0], [18.0, 12.0]])
    >>> result = thl.cg(H, np.array([1.0, -1.0]))
    >>> result.info, result.negative_curvature.curvature
    (-2, -6.0)
    """
    with _checks.collective(
        A, "cg", b=b, x0=x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=callback
    ):
        A, b, x0, tol, maxiter, M = check_system(A, b, x0, rtol, atol, maxiter, M, 10)
        return conjugate_gradient(A, b, x0, tol, maxiter, M, callback, n_matvec=0)


def conjugate_gradient(A, b, x0, tol, maxiter, M, callback, n_matvec):
    """Run CG on checked arguments, `n_matvec` products already counted.

    `tol` is the absolute residual norm to reach; see :func:`cg`.
    """
    n = b.shape[0]
    if not np.any(b):
        return SolveResult(np.zeros(n), 0, None, n_matvec, 0.0, 0)
    if x0 is None or not np.any(x0):
        x, r = np.zeros(n), b.copy()
    else:
        x, r = x0.copy(), b - A.matvec(x0)
        n_matvec += 1
    residual_norm = float(np.linalg.norm(r))
    rho_previous, p = None, None
    for iteration in range(maxiter):
        if residual_norm <= tol:
            return SolveResult(x, 0, None, n_matvec, residual_norm, iteration)
        z = r if M is None else M.matvec(r)
        rho = float(r @ z)
        p = z.copy() if p is None else z + (rho / rho_previous) * p
        q = A.matvec(p)
        n_matvec += 1
        curvature = float(p @ q)
        if curvature <= 0.0:
            certificate = NegativeCurvature(p, curvature / float(p @ p), iteration)
            return SolveResult(
                x, NEGATIVE_CURVATURE_INFO, certificate, n_matvec, residual_norm, iteration
            )
        alpha = rho / curvature
        x = x + alpha * p
        r -= alpha * q
        residual_norm = float(np.linalg.norm(r))
        rho_previous = rho
        if callback is not None:
            callback(x)
    info = 0 if residual_norm <= tol else maxiter
    return SolveResult(x, info, None, n_matvec, residual_norm, maxiter)
