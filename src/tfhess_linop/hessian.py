"""`Hessian`: loss, gradient and Hessian-vector products of a TensorFlow loss.

The class itself holds its construction from a loss function, its layout
and its description; the products are in `_products` (on the batch sums of
`_batch_sums`), the construction from Keras in `_from_keras` and the flat
parameter vector in `_parameters`.
"""

from __future__ import annotations

import inspect

import numpy as np
import tensorflow as tf

from . import _mpi
from ._batch_sums import BatchSums
from ._engine import HVP_MODES, Engine
from ._from_keras import KerasConstruction
from ._keras import underlying_variable
from ._parameters import ParameterVector
from ._products import HessianProducts
from ._staging import Staging

__all__ = ["Hessian"]

# Columns per vectorised HVP call. pfor keeps one copy of the tangent
# activations per column, so memory grows with the block while the time per
# column stops falling after a few dozen columns (on a 784-128-10 MLP with
# 512 samples, 8 columns did as well as 32, and 100 worse); and `dense` with
# 64-column blocks peaked at 555 MB for n = 5,000 against ~1 GB with 256.
_MAX_COLUMNS = 64


class Hessian(KerasConstruction, HessianProducts, BatchSums, ParameterVector):
    r"""The Hessian of a scalar TensorFlow loss with respect to some variables.

    Nothing is stored but the compiled functions: each product reads the
    current values of the variables, so one `Hessian` follows a model
    through training.

    Parameters
    ----------
    loss : callable
        ``loss(variables)`` or ``loss()``, returning a scalar tensor. It is
        run inside a ``tf.function``, so it must be traceable (TensorFlow
        operations on tensors and variables, no NumPy on tensors).
    variables : tf.Variable, keras.Variable, or sequence of them
        The variables to differentiate with respect to. The flat layout of
        every vector is these variables in order, each flattened in C order.
        `loss` receives them exactly as given.
    comm : mpi4py communicator, optional
        With a communicator, `loss` returns this rank's contribution and the
        operator is the Hessian of the sum of the contributions over ranks.
        Every method is then collective over `comm`.
    check_deterministic : bool, default: False
        Evaluate the gradient and one Hessian-vector product twice at
        construction and raise `ValueError` if they differ (dropout in
        training mode, random operations in the loss).
    jit_compile : bool, default: False
        Compile with XLA.
    mode : {"auto", "reverse-over-reverse", "forward-over-reverse"}
        How Hessian-vector products are computed: as the gradient of
        :math:`g^\top v` (reverse-over-reverse), or as the forward-mode
        derivative of the gradient along :math:`v` (forward-over-reverse,
        less memory). "auto" (default) uses reverse-over-reverse for single
        products, the faster one on CPU, and computes a block of columns in
        one graph that runs the forward and backward passes once and one
        more backward pass per column (per column 0.8-1.8x a gradient on
        the benchmark models, against 2.2-2.9x for vectorised blocks). The
        other two force one route where the model allows it, with
        vectorised blocks (``tf.vectorized_map``). Where that cannot
        vectorise the model (the ``while`` loops of recurrent layers),
        blocks run as the column loop, and forward-over-reverse (which
        TensorFlow cannot take through such loops) falls back to
        reverse-over-reverse; each fallback is chosen once per Hessian and
        announced by one `PerformanceWarning`. See also `fixed_point`.

    Attributes
    ----------
    n : int
        Number of parameters (the operator's size).
    variables : list of tf.Variable
        The underlying TensorFlow variables.
    comm : mpi4py communicator or None
    max_columns : int
        Most columns per block call (default 64); `hvp` splits wider
        blocks. Lower it if a wide ``matmat`` runs out of memory.

    See Also
    --------
    Hessian.from_keras : the Hessian of the objective a Keras model trains.
    as_linop : the Hessian as a `scipy.sparse.linalg.LinearOperator`.

    Notes
    -----
    All vectors in and out are float64, whatever the variables' dtype; the
    casts happen inside the compiled graph. With a float32 model, results
    are accurate to about 1e-6 relative only.

    Examples
    --------
    The loss :math:`L(x, y) = 2x^3y^3` has the Hessian
    :math:`\begin{bmatrix}12xy^3 & 18x^2y^2\\ 18x^2y^2 & 12x^3y\end{bmatrix}`,
    which is ``[[12, 18], [18, 12]]`` at (1, 1):

    >>> import numpy as np, tensorflow as tf
    >>> import tfhess_linop as thl
    >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    >>> H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
    >>> H.dense()
    array([[12., 18.],
           [18., 12.]])
    >>> H.hvp(np.array([1.0, 0.0]))
    array([12., 18.])
    >>> H.gradient()
    array([6., 6.])
    """

    def __init__(
        self,
        loss,
        variables,
        *,
        comm=None,
        check_deterministic=False,
        jit_compile=False,
        mode="auto",
    ):
        given, tf_variables = _resolve_variables(variables)
        call = _loss_caller(loss, given)
        self._setup(
            tf_variables,
            call,
            batches=[()],
            signature=(),
            comm=comm,
            mode=mode,
            jit_compile=jit_compile,
            check_deterministic=check_deterministic,
        )
        self.n_samples = None

    def _setup(
        self,
        variables,
        contribution,
        *,
        batches,
        signature,
        comm,
        mode,
        jit_compile,
        check_deterministic,
    ):
        if mode not in HVP_MODES:
            raise ValueError(f"`mode` must be one of {HVP_MODES}; got {mode!r}.")
        self.comm = _mpi.resolve_comm(comm)
        self.mode = mode
        self._batches = batches
        self._engine = Engine(
            variables, contribution, signature, mode=mode, jit_compile=bool(jit_compile)
        )
        self._jit_compile = bool(jit_compile)
        self._layout = self._engine.layout
        self._mutable_state = {}
        self._concrete_functions = {}
        self._fixed = None  # the fixed point of a `with H.fixed_point()` block
        self._kept = None  # the one kept between plain products (`keep_passes`)
        self._keep_passes = True
        self._split = None  # the product's two halves, made at the first fixed point
        self._staging = Staging()
        self.max_columns = _MAX_COLUMNS
        self._check_same_parameters()
        if check_deterministic:
            self._check_deterministic()

    @property
    def max_columns(self):
        """Most columns per vectorised HVP call; `hvp` splits wider blocks."""
        return self._max_columns

    @max_columns.setter
    def max_columns(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`max_columns` must be a positive integer; got {value!r}.")
        self._max_columns = int(value)

    # ------------------------------------------------------------------ info

    @property
    def n(self) -> int:
        """Number of parameters."""
        return self._layout.n

    @property
    def variables(self):
        """The underlying ``tf.Variable`` objects, in layout order."""
        return list(self._engine.variables)

    @property
    def dtype(self):
        """The loss's variables' dtype (the operator itself is always float64)."""
        return self._layout.dtypes[0]

    def __repr__(self):
        parts = [f"n={self.n}", f"variables={len(self._layout.shapes)}"]
        if self.n_samples is not None:
            parts.append(f"samples={self.n_samples}")
        parts += [f"batches={len(self._batches)}", f"mode={self.mode!r}"]
        if self.comm is not None:
            parts.append(f"ranks={self.comm.Get_size()}")
        return f"Hessian({', '.join(parts)})"

    # ---------------------------------------------------------------- layout

    def flatten(self, tensors):
        """Concatenate variable-shaped arrays or tensors into one (n,) float64 vector.

        Parameters
        ----------
        tensors : sequence of array_like
            One per variable, in the variables' shapes.

        Returns
        -------
        ndarray, shape (n,)
        """
        return self._layout.flatten([np.asarray(t) for t in tensors])

    def unflatten(self, vec):
        """Split an (n,) vector into float64 arrays in the variables' shapes.

        Parameters
        ----------
        vec : array_like, shape (n,)

        Returns
        -------
        list of ndarray
        """
        return self._layout.unflatten(vec)


def _resolve_variables(variables):
    """(what the loss receives, list of underlying tf.Variable)."""
    single = isinstance(variables, tf.Variable) or underlying_variable(variables) is not None
    if single:
        items = [variables]
    elif isinstance(variables, (str, bytes)) or not hasattr(variables, "__iter__"):
        raise TypeError(
            "`variables` must be a tf.Variable, a keras.Variable or a sequence of them; "
            f"got {type(variables).__name__}."
        )
    else:
        items = list(variables)
    if not items:
        raise ValueError("`variables` must hold at least one variable; got an empty sequence.")
    resolved = []
    for i, item in enumerate(items):
        variable = underlying_variable(item)
        if variable is None:
            raise TypeError(
                f"`variables[{i}]` must be a tf.Variable or keras.Variable; "
                f"got {type(item).__name__}."
            )
        if not variable.dtype.is_floating:
            raise TypeError(
                f"`variables[{i}]` ({variable.name}) has dtype {variable.dtype.name}; "
                "a Hessian needs floating-point variables."
            )
        resolved.append(variable)
    if len({id(v) for v in resolved}) != len(resolved):
        raise ValueError("`variables` lists the same variable more than once.")
    return variables, resolved


def _loss_caller(loss, variables):
    """A zero-argument function evaluating `loss`, with or without `variables`."""
    if not callable(loss):
        raise TypeError(f"`loss` must be callable; got {type(loss).__name__}.")
    try:
        parameters = inspect.signature(loss).parameters.values()
    except (TypeError, ValueError):
        return lambda: loss(variables)
    required = [
        p
        for p in parameters
        if p.kind is p.VAR_POSITIONAL
        or (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)
    ]
    if required:
        return lambda: loss(variables)
    return loss
