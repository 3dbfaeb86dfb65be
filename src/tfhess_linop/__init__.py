"""The Hessian of a TensorFlow/Keras loss as a SciPy ``LinearOperator``.

>>> import tfhess_linop as thl
>>> H = thl.Hessian.from_keras(model, "mse", x, y)          # doctest: +SKIP
>>> thl.eigsh(thl.as_linop(H), k=1, which="LA")             # doctest: +SKIP
"""

import importlib
import importlib.util
import sys

from . import _mpi

__version__ = "0.1.0"


class _AfterTensorFlowImport:
    """Run `callback` as soon as TensorFlow is imported, before any of its ops can run.

    Under ``mpiexec`` the package sets TensorFlow's threads, which must
    happen before TensorFlow's runtime starts. Importing TensorFlow here to
    do it would cost every import of the package (and the command's
    ``--help``) TensorFlow's seconds of start-up and its log lines, before
    the command can filter them; waiting for the first TensorFlow import
    costs nothing and still comes before any operation.
    """

    def __init__(self, callback):
        self.callback = callback

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                self.callback()

            spec.loader.exec_module = exec_module
        return spec


if _mpi.launcher_size() <= 1 or "tensorflow" in sys.modules:
    _mpi.configure_threads_from_environment()
else:
    sys.meta_path.insert(0, _AfterTensorFlowImport(_mpi.configure_threads_from_environment))

# Public names are imported on first use (PEP 562), so that ``import
# tfhess_linop`` -- and the ``tfhess-linop`` command's --help, --version and
# argument errors -- do not pay for importing TensorFlow (seconds) until a
# name that needs it is used. Name -> submodule that defines it; add a new
# public name here rather than as an import (tests/test_cli.py checks that
# --help imports no TensorFlow).
_EXPORTS = {
    # the operator
    "Hessian": "hessian",
    "HessianOperator": "linop",
    "as_linop": "linop",
    # curvature beyond the Hessian
    "CurvatureOperator": "curvature",
    "EmpiricalFisher": "curvature",
    "Fisher": "curvature",
    "GGN": "curvature",
    "PerformanceWarning": "_engine",
    # eigenvalues
    "eigsh": "eigen",
    "lobpcg": "eigen",
    "power_iteration": "eigen",
    # singular values
    "randomized_svd": "svd",
    "svds": "svd",
    # linear systems and negative curvature
    "NegativeCurvature": "solve",
    "SolveResult": "solve",
    "cg": "solve",
    "minres": "solve",
    "nystrom_preconditioner": "solve",
    "pcg": "solve",
    # inverse operators
    "InverseOperator": "inverses",
    "inverse": "inverses",
    # training and optimisation
    "NewtonCG": "newton",
    "ScipyObjective": "optimize",
    "minimize": "optimize",
    # estimators
    "DiagonalEstimate": "estimators",
    "SpectralDensity": "estimators",
    "TraceEstimate": "estimators",
    "exact_diagonal": "estimators",
    "hutchinson_diagonal": "estimators",
    "hutchinson_trace": "estimators",
    "hutchpp_trace": "estimators",
    "plot_spectral_density": "estimators",
    "spectral_density": "estimators",
    "xdiag": "estimators",
    "xtrace": "estimators",
    # checks
    "dense_hessian_reference": "testing",
    "dottest": "testing",
    "symmetry_test": "testing",
    "taylor_test": "testing",
    # MPI
    "CollectiveError": "_mpi",
    "configure_threads": "_mpi",
}

__all__ = list(_EXPORTS)

# Public submodules that are attributes of the package without an import of
# their own (``tfhess_linop.keras.CurvatureMonitor``), imported on first use.
_SUBMODULES = ("keras",)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
