"""The Hessian of a TensorFlow/Keras loss as a SciPy ``LinearOperator``.

>>> import tfhess_linop as thl
>>> H = thl.Hessian.from_keras(model, "mse", x, y)          # doctest: +SKIP
>>> thl.eigsh(thl.as_linop(H), k=1, which="LA")             # doctest: +SKIP
"""

from . import _mpi

_mpi.configure_threads_from_environment()

from ._mpi import CollectiveError, configure_threads  # noqa: E402
from .eigen import eigsh, lobpcg, power_iteration  # noqa: E402
from .estimators import (  # noqa: E402
    DiagonalEstimate,
    SpectralDensity,
    TraceEstimate,
    exact_diagonal,
    hutchinson_diagonal,
    hutchinson_trace,
    hutchpp_trace,
    plot_spectral_density,
    spectral_density,
    xdiag,
    xtrace,
)
from .hessian import Hessian  # noqa: E402
from .linop import HessianOperator, as_linop  # noqa: E402
from .newton import NewtonCG  # noqa: E402
from .solve import (  # noqa: E402
    NegativeCurvature,
    SolveResult,
    cg,
    minres,
    nystrom_preconditioner,
    pcg,
)
from .svd import randomized_svd, svds  # noqa: E402
from .testing import dense_hessian_reference, dottest, symmetry_test, taylor_test  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    # the operator
    "Hessian",
    "HessianOperator",
    "as_linop",
    # eigenvalues
    "eigsh",
    "lobpcg",
    "power_iteration",
    # singular values
    "randomized_svd",
    "svds",
    # linear systems and negative curvature
    "NegativeCurvature",
    "SolveResult",
    "cg",
    "minres",
    "nystrom_preconditioner",
    "pcg",
    # training
    "NewtonCG",
    # estimators
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
    # checks
    "dense_hessian_reference",
    "dottest",
    "symmetry_test",
    "taylor_test",
    # MPI
    "CollectiveError",
    "configure_threads",
]
