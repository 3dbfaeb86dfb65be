"""Curvature estimators: trace, diagonal and spectral density of an operator.

Every function takes a symmetric operator (a SciPy ``LinearOperator``, or a
dense or sparse matrix) and multiplies it by blocks of vectors through
``A.matmat``. With an operator that has a ``comm`` attribute (such as a
`HessianOperator` built with an MPI communicator) the functions are collective:
every rank draws the same probes and returns the same result.
"""

from .density import SpectralDensity, spectral_density
from .diagonal import DiagonalEstimate, exact_diagonal, hutchinson_diagonal, xdiag
from .plot import plot_spectral_density
from .trace import TraceEstimate, hutchinson_trace, hutchpp_trace, xtrace

__all__ = [
    "DiagonalEstimate",
    "SpectralDensity",
    "TraceEstimate",
    "exact_diagonal",
    "hutchinson_diagonal",
    "hutchinson_trace",
    "hutchpp_trace",
    "plot_spectral_density",
    "spectral_density",
    "xdiag",
    "xtrace",
]
