"""One extreme eigenvalue by :func:`power_iteration`, with a residual stopping test."""

from __future__ import annotations

import numpy as np

from .. import _checks, _mpi
from .._linalg import single_threaded_blas

__all__ = ["power_iteration"]


def _iv_power_iteration(A, which, tol, maxiter, v0, rng):
    A, n = _checks.square_operator(A)
    _checks.choice(which, "which", ("LM", "LA", "SA"))
    tol = _checks.nonnegative_real(tol, "tol")
    maxiter = _checks.positive_integer(maxiter, "maxiter")
    if v0 is None:
        v0 = _mpi.draw(_checks.generator(rng), (n,), _checks.communicator(A))
    else:
        v0 = _checks.vector(v0, n, "v0")
    if not np.any(v0):
        raise ValueError("`v0` must be a nonzero vector.")
    return A, tol, maxiter, v0


def _power(A, v, shift, tol, maxiter):
    """Power iteration on ``A - shift I``; returns (eigenvalue, vector, info, ‖Av‖)."""
    v = v / np.linalg.norm(v)
    for _ in range(maxiter):
        w = A.matvec(v) - shift * v
        theta = float(v @ w)
        norm_w = float(np.linalg.norm(w))
        if np.linalg.norm(w - theta * v) <= tol * abs(theta):
            return theta, v, 0, norm_w
        if norm_w == 0.0:
            # v spans a null vector of A - shift I: an exact eigenpair whose
            # zero eigenvalue the relative test cannot accept.
            return theta, v, 0, norm_w
        v = w / norm_w
    return theta, v, maxiter, norm_w


def power_iteration(A, which="LM", *, tol=1e-6, maxiter=1000, v0=None, rng=None):
    """Find one extreme eigenvalue of a symmetric operator by power iteration.

    The iteration stops on the residual, when ``‖A v - λ v‖ <= tol * |λ|``
    with λ the Rayleigh quotient of the unit vector v, not on the change of λ
    between steps (which can be small long before v is an eigenvector).

    ``which="LM"`` is the eigenvalue of largest magnitude (the seed's
    "pi-max"). ``"LA"`` and ``"SA"``, the algebraically largest and smallest
    eigenvalues, also work on indefinite operators: a first power iteration
    finds the eigenvalue of largest magnitude λ₁; if it is the wanted end
    of the spectrum it is returned, otherwise a second power iteration runs
    on ``A - λ₁ I``, whose dominant eigenvalue is the other end of the
    spectrum minus λ₁.

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator.
    which : {"LM", "LA", "SA"}, optional
        Largest magnitude, largest algebraic or smallest algebraic.
    tol : float, optional
        Relative residual tolerance. For the shifted stage it is relative to
        the eigenvalue of the shifted operator, ``|λ - λ₁|``.
    maxiter : int, optional
        Maximum number of products per stage.
    v0 : ndarray, shape (n,), optional
        Start vector (not modified); by default a standard normal draw from
        `rng`, the same on every MPI rank.
    rng : int or numpy.random.Generator, optional
        Seed or generator for the default `v0`.

    Returns
    -------
    eigenvalue : float
        The Rayleigh quotient of `eigenvector`.
    eigenvector : ndarray, shape (n,)
        Unit vector.
    info : int
        0 if the tolerance was reached, otherwise the number of iterations of
        the stage that did not converge (like SciPy's iterative solvers).

    See Also
    --------
    eigsh : Lanczos, converges much faster for the same number of products.

    Notes
    -----
    Each iteration costs one product. The error decreases like
    :math:`|\\lambda_2/\\lambda_1|^j` after j products, where
    :math:`\\lambda_2` is the eigenvalue (of the operator actually iterated)
    second largest in magnitude; when :math:`|\\lambda_2| = |\\lambda_1|` with
    opposite signs, the "LM" iteration does not converge (``info > 0``),
    and "LA"/"SA" shift by :math:`-\\|A v\\|` instead.

    Examples
    --------
    The Hessian of the seed's loss :math:`2x^3y^3` at (1, 1) has
    eigenvalues 30 and -6:

    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> H = np.array([[12.0, 18.0], [18.0, 12.0]])
    >>> lam, v, info = thl.power_iteration(H, tol=1e-10, rng=0)
    >>> round(lam, 8), info
    (30.0, 0)
    >>> lam, v, info = thl.power_iteration(H, which="SA", tol=1e-10, rng=0)
    >>> round(lam, 8), info
    (-6.0, 0)
    >>> np.allclose(H @ v, lam * v)
    True
    """
    with _checks.collective(
        A, "power_iteration", which=which, tol=tol, maxiter=maxiter, v0=v0, rng=rng
    ):
        A, tol, maxiter, v0 = _iv_power_iteration(A, which, tol, maxiter, v0, rng)
        with single_threaded_blas():
            return _power_iteration(A, which, tol, maxiter, v0)


def _power_iteration(A, which, tol, maxiter, v0):
    theta, v, info, norm_av = _power(A, v0, 0.0, tol, maxiter)
    if which == "LM" or (info == 0 and (theta >= 0) == (which == "LA")):
        return theta, v, info
    if info == 0:
        shift = theta
    else:
        # No dominant eigenvalue (e.g. ±λ): ‖A v‖ <= ‖A‖ still puts the shift
        # on the side of the spectrum opposite to the wanted end.
        shift = -norm_av if which == "LA" else norm_av
    mu, v, info, _ = _power(A, v0, shift, tol, maxiter)
    return mu + shift, v, info
