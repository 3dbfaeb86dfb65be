"""Eigenvalues and eigenvectors of a symmetric operator.

Three solvers, all matrix-free and all working on any symmetric
``LinearOperator`` (a Hessian from :func:`tfhess_linop.as_linop`, a dense
array, a sparse matrix):

- :func:`eigsh`, a thick-restart Lanczos method for the extreme eigenvalues
  (SciPy's ARPACK for shift-invert, generalized problems and "SM"), with a
  start vector that is deterministic and identical on every MPI rank, and a
  Krylov dimension chosen for few Hessian-vector products;
- :func:`lobpcg`, SciPy's block method, whose products are batched through
  ``matmat``;
- :func:`power_iteration`, the seed's "pi-max", with a residual stopping test
  and a spectral shift for the algebraically largest or smallest eigenvalue
  of an indefinite operator.

This package is the public home of these names; each solver has a module of
its own: :func:`eigsh` (``_eigsh``), :func:`lobpcg` (``_lobpcg``) and
:func:`power_iteration` (``_power``).
"""

from ._eigsh import eigsh
from ._lobpcg import lobpcg
from ._power import power_iteration

__all__ = ["eigsh", "lobpcg", "power_iteration"]
