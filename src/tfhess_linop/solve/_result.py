"""What the solvers return: the solution with SciPy's ``info``, and a curvature certificate.

Separate from the solvers because all of them (:func:`~tfhess_linop.cg`,
:func:`~tfhess_linop.minres`, :func:`~tfhess_linop.pcg`) and their callers
(the inverse operators, Newton-CG) share these records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NEGATIVE_CURVATURE_INFO", "NegativeCurvature", "SolveResult"]

# ``info`` of CG and PCG when they stopped at a direction of non-positive
# curvature; documented (for Sphinx, which reads ``#:`` comments at the
# assignment) at its public path, tfhess_linop.solve.
NEGATIVE_CURVATURE_INFO = -2


# eq=False: the fields hold arrays, whose == is elementwise, not a bool.
@dataclass(frozen=True, eq=False)
class NegativeCurvature:
    """A direction along which the operator has non-positive curvature.

    Attributes
    ----------
    direction : ndarray, shape (n,)
        The direction d (not normalised).
    curvature : float
        The Rayleigh quotient :math:`d^T A d / \\|d\\|^2 \\le 0`, an upper bound
        on the smallest eigenvalue of A.
    iteration : int
        The (0-based) iteration of the solver that found it.
    """

    direction: np.ndarray
    curvature: float
    iteration: int


@dataclass(frozen=True, eq=False)
class SolveResult:
    """Outcome of :func:`cg`, :func:`minres` or :func:`pcg`.

    Unpacks and indexes like SciPy's ``(x, info)`` tuple:
    ``x, info = cg(A, b)``, ``cg(A, b)[0]``.

    Attributes
    ----------
    x : ndarray, shape (n,)
        The last iterate.
    info : int
        0: converged; > 0: not converged after that many iterations;
        :data:`NEGATIVE_CURVATURE_INFO` (-2): CG stopped on negative curvature.
    negative_curvature : NegativeCurvature or None
        The first direction of non-positive curvature met, if any.
    n_matvec : int
        Number of products with A (Hessian-vector products), including the
        preconditioner's construction for :func:`pcg`.
    residual_norm : float
        Norm of the residual ``b - A x`` as updated by the recurrence
        (preconditioned MINRES: in the norm defined by M).
    n_iter : int
        Number of iterations.
    """

    x: np.ndarray
    info: int
    negative_curvature: NegativeCurvature | None
    n_matvec: int
    residual_norm: float
    n_iter: int

    def __iter__(self):
        return iter((self.x, self.info))

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return (self.x, self.info)[index]
