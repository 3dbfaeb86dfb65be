"""Linear systems with a symmetric operator, and negative-curvature certificates.

:func:`cg` and :func:`minres` take SciPy's arguments and unpack like SciPy's
``x, info``, but return a :class:`SolveResult` that also says whether the
operator showed non-positive curvature, and along which direction: for a
Hessian that is a descent direction for a saddle point or a non-convex
region, which truncated-Newton methods need (Steihaug's CG). :func:`pcg` is
CG preconditioned by a randomized Nyström approximation of the operator.

``info`` follows SciPy: 0 converged, a positive value the number of
iterations made without converging, and :data:`NEGATIVE_CURVATURE_INFO`
(-2) for "stopped on negative curvature" (CG only; MINRES keeps solving).

This package is the public home of these names; each concept has a module
of its own: the result records (``_result``), the shared argument checks
(``_inputs``), CG (``_cg``), MINRES (``_minres``), the Nyström
preconditioner (``_nystrom``) and PCG, their composition (``_pcg``).
"""

from . import _result
from ._cg import cg
from ._minres import minres
from ._nystrom import NystromPreconditioner, nystrom_preconditioner
from ._pcg import pcg
from ._result import NegativeCurvature, SolveResult

__all__ = [
    "NEGATIVE_CURVATURE_INFO",
    "NegativeCurvature",
    "NystromPreconditioner",
    "SolveResult",
    "cg",
    "minres",
    "nystrom_preconditioner",
    "pcg",
]

#: ``info`` of :func:`cg` and :func:`pcg` when they stopped at a direction of
#: non-positive curvature (SciPy uses > 0 for "not converged" and -1 for
#: breakdown).
NEGATIVE_CURVATURE_INFO = _result.NEGATIVE_CURVATURE_INFO
