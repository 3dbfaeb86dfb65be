"""CG preconditioned by a randomized Nyström approximation of the operator.

Only the composition of :mod:`._nystrom` and :mod:`._cg`: one sketch, then
CG with its stop on negative curvature; in a module of its own so that
neither of the two depends on the other.
"""

from __future__ import annotations

from .. import _checks
from .._linalg import single_threaded_blas
from ._cg import conjugate_gradient
from ._inputs import check_nystrom, check_system
from ._nystrom import NystromPreconditioner, nystrom_sketch

__all__ = ["pcg"]


def pcg(
    A,
    b,
    rank=10,
    oversample=10,
    *,
    x0=None,
    rtol=1e-5,
    atol=0.0,
    maxiter=None,
    shift=0.0,
    callback=None,
    rng=None,
):
    """Solve ``A x = b`` by CG with a randomized Nyström preconditioner.

    Builds :func:`nystrom_preconditioner` ``(A, rank, oversample=...)`` with
    one batched product of ``rank + oversample`` columns, then runs
    :func:`cg` with it, including the stop on negative curvature. When the
    spectrum of a positive definite A has ``rank`` large outlying
    eigenvalues (typical of neural-network Hessians), the preconditioned
    operator's condition number is about :math:`\\lambda_{rank}/\\lambda_n`
    instead of :math:`\\lambda_1/\\lambda_n`, and CG needs far fewer
    iterations.

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator; may be indefinite.
    b : ndarray, shape (n,) or (n, 1)
        Right-hand side (not modified).
    rank : int, optional
        Rank of the Nyström approximation, ``0 < rank <= n``.
    oversample : int, optional
        Extra sketch columns. The seed's ``pCG(b, k, p)`` is
        ``pcg(A, b, rank=k, oversample=p)``.
    x0, rtol, atol, maxiter, callback
        As in :func:`cg`.
    shift : float, optional
        μ ≥ 0 of :func:`nystrom_preconditioner`.
    rng : int or numpy.random.Generator, optional
        Seed or generator for the sketch.

    Returns
    -------
    SolveResult
        As :func:`cg`; ``n_matvec`` includes the ``min(rank + oversample, n)``
        products of the sketch.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> A = np.diag(np.r_[np.logspace(2, 6, 10), np.linspace(1.0, 2.0, 200)])
    >>> b = np.ones(210)
    >>> plain = thl.cg(A, b, rtol=1e-10)
    >>> preconditioned = thl.pcg(A, b, rank=10, oversample=5, rtol=1e-10, rng=0)
    >>> np.allclose(preconditioned.x, b / np.diag(A))
    True
    >>> bool(preconditioned.n_iter < plain.n_iter)
    True
    """
    with (
        _checks.collective(
            A,
            "pcg",
            b=b,
            rank=rank,
            oversample=oversample,
            x0=x0,
            rtol=rtol,
            atol=atol,
            maxiter=maxiter,
            shift=shift,
            callback=callback,
            rng=rng,
        ),
        single_threaded_blas(),
    ):
        A, n, rank, oversample, shift, rng = check_nystrom(A, rank, oversample, shift, rng)
        A, b, x0, tol, maxiter, _ = check_system(A, b, x0, rtol, atol, maxiter, None, 10)
        M = NystromPreconditioner(*nystrom_sketch(A, n, rank, oversample, rng), shift)
        sketch_products = min(rank + oversample, n)
        return conjugate_gradient(A, b, x0, tol, maxiter, M, callback, sketch_products)
