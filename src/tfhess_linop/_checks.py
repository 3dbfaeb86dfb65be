"""Argument checks and small helpers shared by the spectral and solver modules.

Every public function of :mod:`eigen`, :mod:`svd`, :mod:`solve`,
:mod:`testing` and :mod:`newton` validates its arguments in one private
``_iv``; these helpers keep the messages of those functions identical.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
from scipy.sparse.linalg import aslinearoperator

from . import _mpi
from .hessian import Hessian
from .linop import as_linop


def square_operator(A, name="A"):
    """Return `A` as a float64-compatible square ``LinearOperator`` and its size.

    A :class:`tfhess_linop.Hessian` becomes its ``as_linop`` operator; dense
    arrays of integers are converted to float64, so that the products are
    floating point.
    """
    if isinstance(A, np.ndarray) and A.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array or a LinearOperator, got an array of shape {A.shape}."
        )
    if isinstance(A, np.ndarray) and not np.issubdtype(A.dtype, np.inexact):
        A = A.astype(np.float64)
    if isinstance(A, Hessian):
        A = as_linop(A)
    try:
        operator = aslinearoperator(A)
    except TypeError as exc:
        raise TypeError(
            f"`{name}` must be a LinearOperator (e.g. tfhess_linop.as_linop(H)), a "
            f"Hessian, an ndarray or a sparse array, got {type(A).__name__}."
        ) from exc
    if len(operator.shape) != 2 or operator.shape[0] != operator.shape[1]:
        raise ValueError(f"`{name}` must be square, got shape {operator.shape}.")
    if operator.dtype is not None and np.issubdtype(operator.dtype, np.complexfloating):
        raise TypeError(f"`{name}` must be real, got dtype {operator.dtype}.")
    return operator, operator.shape[0]


def communicator(A):
    """The MPI communicator the operator's products are collective over, or None."""
    return getattr(A, "comm", None)


def collective(A, name, **arguments):
    """The body of public function `name` as one collective call over ``A.comm``.

    See :func:`tfhess_linop._mpi.collective_call`: the ranks check on entry
    that they make the same call (the same function, `A`'s shape and the
    same `arguments`) and on exit that none of them left it with an error
    the others did not see. Without a communicator it does nothing.
    """
    comm = communicator(A)
    if not hasattr(comm, "Allreduce"):
        comm = None
    return _Call(_mpi.collective_call(comm, name, A=A, **arguments), A)


class _Call(contextlib.ExitStack):
    """A collective call that also keeps a Hessian's passes at a fixed point.

    Inside a package algorithm the parameters do not move (and if a
    callback moves them, the fixed point sees it), so the Hessian's
    primal passes are computed once per point: see `Hessian.fixed_point`.
    """

    def __init__(self, call, A):
        super().__init__()
        self._call, self._A = call, A

    def __enter__(self):
        super().__enter__()
        token = self.enter_context(self._call)
        fixed_point = getattr(getattr(self._A, "hessian", self._A), "fixed_point", None)
        if callable(fixed_point):
            self.enter_context(fixed_point())
        return token


def positive_integer(value, name, *, upper=None, upper_text=None):
    """Check that `value` is an integer in ``[1, upper]`` and return it as int.

    `upper_text` names the bound in the message (e.g. "n - 1 = 59").
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    value = int(value)
    if value < 1 or (upper is not None and value > upper):
        bound = f"`0 < {name} <= {upper_text or upper}`" if upper is not None else "positive"
        raise ValueError(f"`{name}` must be an integer satisfying {bound}, got {value}.")
    return value


def integer_at_least(value, name, minimum, reason=""):
    """Check that `value` is an integer ``>= minimum`` and return it as int.

    `reason` follows the bound in the message (e.g. " for Hutch++").
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    value = int(value)
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}{reason}, got {value}.")
    return value


def generator(rng):
    """Return a `numpy.random.Generator` made from `rng` (None, seed or Generator)."""
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            "`rng` must be None, an int seed, a SeedSequence or a numpy Generator, "
            f"got {type(rng).__name__}."
        ) from exc


def nonnegative_integer(value, name):
    """Check that `value` is an integer ``>= 0`` and return it as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value}.")
    return int(value)


def nonnegative_real(value, name):
    """Check that `value` is a finite real number ``>= 0`` and return it as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite non-negative number, got {value}.")
    return value


def real(value, name):
    """Check that `value` is a finite real number (of any sign) and return it as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite real number, got {value}.")
    return value


def optional_nonnegative_real(value, name):
    """:func:`nonnegative_real`, or None where None means the solver's default."""
    return None if value is None else nonnegative_real(value, name)


def optional_positive_integer(value, name):
    """:func:`positive_integer`, or None where None means the solver's default."""
    return None if value is None else positive_integer(value, name)


def finite(array, name):
    """Raise a ValueError naming `name` and the first non-finite entry of `array`."""
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        index = tuple(int(i) for i in np.unravel_index(bad[0], array.shape))
        index = index[0] if len(index) == 1 else index
        raise ValueError(
            f"`{name}` must be finite, got {array.flat[bad[0]]} at index {index} "
            f"({bad.size} non-finite entries)."
        )
    return array


def vector(value, n, name):
    """Return `value` as a new finite float64 array of shape (n,), accepting (n, 1) too.

    Non-finite entries are refused here, so that the error names the argument
    (a NaN start vector or right-hand side would otherwise reach the products,
    or make an iteration on a dense operator run to `maxiter` on NaNs).
    """
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (n,):
        raise ValueError(
            f"`{name}` must have shape ({n},) or ({n}, 1) to match the operator, "
            f"got shape {np.shape(value)}."
        )
    if np.iscomplexobj(array):
        raise TypeError(f"`{name}` must be real, got dtype {array.dtype}.")
    if array.dtype.kind not in "fiub":
        raise TypeError(f"`{name}` must be a real array, got dtype {array.dtype}.")
    return finite(np.array(array, dtype=np.float64), name)


def block(value, n, k, name):
    """Return `value` as a new finite float64 array of shape (n, k), accepting (n,) for k = 1."""
    array = np.asarray(value)
    if array.ndim == 1 and k == 1:
        array = array[:, None]
    if array.shape != (n, k):
        raise ValueError(
            f"`{name}` must have shape ({n}, {k}) (n, k), got shape {np.shape(value)}."
        )
    if np.iscomplexobj(array) or array.dtype.kind not in "fiub":
        raise TypeError(f"`{name}` must be a real array, got dtype {array.dtype}.")
    return finite(np.array(array, dtype=np.float64), name)


def choice(value, name, options):
    """Check that `value` is one of `options` (strings) and return it."""
    if value not in options:
        expected = ", ".join(repr(o) for o in options)
        raise ValueError(f"`{name}` must be one of {expected}, got {value!r}.")
    return value


def assign_flat(hessian, flat):
    """Set the Hessian's variables to the flat float64 vector `flat` (cast to their dtype)."""
    for variable, array in zip(hessian.variables, hessian.unflatten(flat), strict=True):
        variable.assign(np.asarray(array, dtype=variable.dtype.as_numpy_dtype))


__all__ = [
    "assign_flat",
    "block",
    "choice",
    "collective",
    "communicator",
    "finite",
    "generator",
    "integer_at_least",
    "nonnegative_integer",
    "nonnegative_real",
    "optional_nonnegative_real",
    "optional_positive_integer",
    "positive_integer",
    "real",
    "square_operator",
    "vector",
]
