"""`Hessian`: loss, gradient and Hessian-vector products of a TensorFlow loss."""

from __future__ import annotations

import contextlib
import inspect
import warnings

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from . import _fixed_point, _mpi
from ._engine import HVP_MODES, Engine
from ._keras import keras_variables, underlying_variable
from ._objective import KerasObjective
from ._parameters import ParameterVector
from ._sources import DataSource
from ._staging import Staging

__all__ = ["Hessian"]

# Columns per vectorised HVP call. pfor keeps one copy of the tangent
# activations per column, so memory grows with the block while the time per
# column stops falling after a few dozen columns (on a 784-128-10 MLP with
# 512 samples, 8 columns did as well as 32, and 100 worse); and `dense` with
# 64-column blocks peaked at 555 MB for n = 5,000 against ~1 GB with 256.
_MAX_COLUMNS = 64


class Hessian(ParameterVector):
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

    @classmethod
    def from_keras(
        cls,
        model,
        loss=None,
        x=None,
        y=None,
        *,
        sample_weight=None,
        variables=None,
        batch_size=None,
        comm=None,
        shard=True,
        training=False,
        model_losses=True,
        allow_batch_dependence=False,
        check_deterministic=False,
        jit_compile=False,
        mode="auto",
    ):
        """The Hessian of the objective Keras trains, on all the data, w.r.t. the weights.

        The operator is exactly the Hessian of
        ``model.compute_loss(x, y, model(x), sample_weight)`` evaluated on
        all the data as one batch -- what ``model.fit`` minimises: the
        compiled loss of every output (with its ``loss_weights``,
        reduction, masks and sample weights) plus ``model.losses`` (weight
        and activity regularizers, ``add_loss``), or an overridden
        ``compute_loss``. It is the same operator whatever `batch_size` and
        however many ranks hold the data; see the operator guide for how
        each term is split exactly.

        Collective over `comm`. Construction makes one forward pass over
        the data (sample count, loss divisors) and checks, on the first
        samples, that splitting the data into batches does not change the
        objective.

        Parameters
        ----------
        model : keras.Model
            A built model.
        loss : str, keras.losses.Loss, callable or nest of them, optional
            None (default): the loss `model` was compiled with. Otherwise it
            replaces the compiled loss as ``model.compile(loss=loss)``
            would (a name, a loss object with its reduction, a function
            ``loss(y_true, y_pred)`` of per-sample losses, or a nest of them
            per output); ``model.losses`` still count (see `model_losses`).
        x : array_like, nest, DataFrame, tf.data.Dataset or keras.utils.PyDataset
            Inputs: arrays (dicts for named inputs), a pandas DataFrame, or a
            finite dataset yielding ``x``, ``(x, y)`` or ``(x, y,
            sample_weight)``, batched or not; datasets are streamed, one
            batch in memory at a time.
        y : array_like or nest of array_like, optional
            Targets, samples along the first axis (not with a dataset).
        sample_weight : array_like or nest, optional
            Per-sample (or per-timestep) weights, as for ``fit``.
        variables : sequence of variables, layers or layer names, optional
            Take the Hessian block of these parameters only (default: all
            of ``model.trainable_variables``). Layers contribute their
            trainable variables; frozen layers have none.
        batch_size : int, optional
            Samples per forward pass; None passes all (local) samples at
            once. It bounds memory only: it does not change the operator.
        comm : mpi4py communicator, optional
            Distribute the data over the ranks of `comm`.
        shard : bool, default: True
            With `comm`: `x`, `y` are the full data (the same on every rank)
            and each rank keeps its ``numpy.array_split`` shard of the
            samples; of a dataset, rank r of P keeps batches r, r + P,
            r + 2P, ... (round-robin). False means the data already is this
            rank's.
        training : bool, default: False
            Passed to the model call. Non-trainable state that a
            training-mode call updates (BatchNorm statistics) is restored
            after every call.
        model_losses : bool, default: True
            Include ``model.losses`` (weight and activity regularizers,
            ``add_loss`` terms). False leaves them out.
        allow_batch_dependence : bool, default: False
            An objective that is not a sum over samples (BatchNorm in
            training mode, a batch-level loss such as Dice) changes when the
            data is split into batches or ranks; that raises ``ValueError``
            unless this is True, which takes the sum of the batches'
            objectives instead.
        check_deterministic, jit_compile, mode
            As for `Hessian`.

        Returns
        -------
        Hessian

        Raises
        ------
        ValueError, TypeError
            At construction, for data, losses and variables that do not fit
            the model (each message names the argument).

        Notes
        -----
        Keras losses compute in ``floatx``; here they compute in the
        model's dtype (float64 for a float64 model), so a float64 model
        gets the float64 value of the same objective.

        Examples
        --------
        >>> import numpy as np, keras
        >>> import tfhess_linop as thl
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, dtype="float64")])
        >>> x = np.random.default_rng(0).standard_normal((20, 3))
        >>> y = np.ones((20, 1))
        >>> H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=7)
        >>> H.n
        4
        >>> # For a linear model and MSE, H = 2/N [x 1]^T [x 1]:
        >>> X1 = np.hstack([x, np.ones((20, 1))])
        >>> np.allclose(H.dense(), 2 * X1.T @ X1 / 20)
        True
        """
        comm = _mpi.resolve_comm(comm)
        tf_variables = keras_variables(model, variables)
        source = DataSource(
            x, y, sample_weight, batch_size=batch_size, comm=comm, shard=shard, model=model
        )
        objective = KerasObjective(
            model,
            loss,
            source,
            training=training,
            model_losses=model_losses,
            allow_batch_dependence=allow_batch_dependence,
            comm=comm,
        )
        self = cls.__new__(cls)
        self._setup(
            tf_variables,
            objective.contribution,
            batches=source,
            signature=source.signature,
            comm=comm,
            mode=mode,
            jit_compile=jit_compile,
            check_deterministic=check_deterministic,
        )
        self.n_samples = objective.n_global
        # The curvature operators (GGN, Fisher) of the same objective start from it.
        self._objective = objective
        return self

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
        self._fixed = None
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

    # ----------------------------------------------------------- evaluations

    def loss_value(self) -> float:
        """The loss at the current variables. Collective over `comm`."""
        return float(self._sum(self._engine.loss, ())[()])

    def value_and_gradient(self):
        """The loss and its gradient from one pass. Collective over `comm`.

        Returns
        -------
        value : float
        gradient : ndarray, shape (n,)
        """
        out = self._sum(self._engine.value_and_gradient, (self.n + 1,))
        return float(out[0]), out[1:]

    def gradient(self):
        """The gradient at the current variables. Collective over `comm`.

        Returns
        -------
        ndarray, shape (n,)
        """
        return self.value_and_gradient()[1]

    def hvp(self, v):
        """Hessian-vector product(s). Collective over `comm`.

        Parameters
        ----------
        v : array_like, shape (n,) or (n, k)
            One vector, or k vectors as columns, computed by vectorised calls
            of at most `max_columns` columns each (a vectorised HVP holds
            one copy of the model's activations per column).

        Returns
        -------
        ndarray, float64, same shape as `v`
        """
        v = self._check_vectors(v, "v")
        if self._fixed is not None:
            matrix = v if v.ndim == 2 else v[:, None]
            result = self._fixed_point_sum(matrix)
            if result is not None:
                return result if v.ndim == 2 else result[:, 0]
        if v.ndim == 1:
            return self._sum(self._engine.hvp, (self.n,), v)
        if v.shape[1] == 1:
            return self._sum(self._engine.hvp, (self.n,), v[:, 0])[:, None]
        if v.shape[1] <= self.max_columns:
            return self._sum(self._engine.hvp_columns, v.shape, v)
        result = np.empty_like(v)
        for start in range(0, v.shape[1], self.max_columns):
            block = np.ascontiguousarray(v[:, start : start + self.max_columns])
            result[:, start : start + block.shape[1]] = self._sum(
                self._engine.hvp_columns, block.shape, block
            )
        return result

    @contextlib.contextmanager
    def fixed_point(self, *, memory_budget=None):
        """Products at fixed parameters inside a ``with`` block: the primal passes paid once.

        Inside the block, `hvp` (and so the operator of `as_linop`) computes
        the forward and backward passes once per point and each product by
        one more backward pass alone: about 1.0-1.1x a gradient per product
        on a 784-128-10 MLP, against 1.3-1.8x outside. The package's own
        algorithms (`eigsh`, `lobpcg`, the solvers, the estimators,
        `NewtonCG`'s inner solves) enter it by themselves; use it around
        SciPy's own functions. Collective over `comm` like `hvp`.

        The results are those of `hvp` outside the block, to round-off.
        Every product checks, inside the graph, that the parameters still
        hold the values the passes read (bit for bit); after any change
        (`set_parameters`, an optimizer step, a plain ``assign``) the passes
        are recomputed at the new point, so the block never returns a stale
        product. Other variables the loss reads (BatchNorm's moving
        statistics in inference mode, a frozen layer's weights) are read once
        per point and not checked: change them only outside the block, or
        move the parameters too (as an optimizer step does).

        Parameters
        ----------
        memory_budget : int, optional
            Most bytes the kept intermediates may take, estimated from the
            traced graph (an upper bound). Default: an eighth of the
            machine's memory, at most 4 GiB. Over it, a `PerformanceWarning`
            is issued and products are computed as outside the block.

        Yields
        ------
        FixedPoint
            ``active`` (None before the first product, then whether the
            kept passes are used), ``reason`` (why not), ``starts`` (how
            often the passes were computed) and ``estimated_bytes``.

        Notes
        -----
        Not taken with ``mode="forward-over-reverse"`` or ``jit_compile=True``
        (the kept passes are reverse-mode and cannot be compiled by XLA).
        Each local data batch keeps its own passes, in a thread of its own,
        until the block ends. Nested blocks share the outer one.

        Examples
        --------
        >>> import numpy as np, tensorflow as tf
        >>> import tfhess_linop as thl
        >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
        >>> H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
        >>> with H.fixed_point() as point:
        ...     first = H.hvp(np.array([1.0, 0.0]))
        ...     H.set_parameters([2.0, 1.0])
        ...     second = H.hvp(np.array([1.0, 0.0]))
        >>> first, second
        (array([12., 18.]), array([24., 72.]))
        >>> point.starts  # the passes were computed at two points
        2
        """
        if self._fixed is not None:
            yield self._fixed
            return
        if memory_budget is None:
            memory_budget = _fixed_point.default_memory_budget()
        point = _fixed_point.FixedPoint(
            self._engine,
            self._batches,
            memory_budget=memory_budget,
            parameters=self._engine.variables,
        )
        if self.mode == "forward-over-reverse" or self._jit_compile:
            point.active = False
            point.reason = f"not taken with mode={self.mode!r}, jit_compile={self._jit_compile}"
        self._fixed = point
        try:
            yield point
        finally:
            self._fixed = None
            point.close()

    def _fixed_point_sum(self, matrix):
        """``H @ matrix`` through the fixed point's servers, or None if not taken."""
        point = self._fixed
        if point.active is None:
            # All ranks take the same route: the fixed point only if it fits
            # the budget on every rank (collective, once per block).
            over = _mpi.collective_sum(
                lambda: np.array([0.0 if point.fits() else 1.0]), (1,), self.comm
            )
            point.active = bool(over[0] == 0)
            if not point.active and not point.reason:
                point.reason = "another rank's intermediates are over its memory budget."
        if not point.active:
            return None

        def compute():
            if not np.isfinite(matrix).all():
                raise ValueError("`v` has non-finite entries (NaN or inf).")
            return point.product(matrix)

        return _mpi.collective_sum(compute, matrix.shape, self.comm)

    def action(self, v):
        """The gradient and the Hessian-vector product from one pass.

        Collective over `comm`.

        Parameters
        ----------
        v : array_like, shape (n,)

        Returns
        -------
        gradient : ndarray, shape (n,)
        hv : ndarray, shape (n,)
        """
        v = self._check_vectors(v, "v", allow_matrix=False)
        out = self._sum(self._engine.action, (2 * self.n,), v)
        return out[: self.n], out[self.n :]

    def dense(self, block_size=None, progress=False):
        """The dense (n, n) Hessian, assembled from batched HVPs of identity blocks.

        Collective over `comm`. Memory beyond the result is bounded by the
        block: an (n, block_size) identity block and one vectorised HVP of
        that many columns.

        Parameters
        ----------
        block_size : int, optional
            Columns per batched HVP (default: `max_columns`).
        progress : bool, default: False
            Show a progress bar (on rank 0).

        Returns
        -------
        ndarray, shape (n, n)
            Symmetric (the average of the assembled matrix and its transpose).
        """
        n = self.n
        if block_size is None:
            block_size = max(1, min(n, self.max_columns))
        elif (
            isinstance(block_size, bool)
            or not isinstance(block_size, (int, np.integer))
            or block_size <= 0
        ):
            raise ValueError(
                f"`block_size` must be a positive integer or None; got {block_size!r}."
            )
        gib = n * n * 8 / 2**30
        if gib > 1:
            warnings.warn(
                f"dense() allocates an ({n}, {n}) float64 array: {gib:.1f} GiB.",
                UserWarning,
                stacklevel=2,
            )
        result = np.empty((n, n))
        bar = tqdm(
            total=n,
            desc="dense Hessian",
            unit="col",
            disable=not progress or _mpi.rank(self.comm) != 0,
        )
        with bar:
            for start in range(0, n, block_size):
                stop = min(start + block_size, n)
                block = np.zeros((n, stop - start))
                block[np.arange(start, stop), np.arange(stop - start)] = 1.0
                result[:, start:stop] = self.hvp(block)
                bar.update(stop - start)
        _symmetrize(result, block_size)
        return result

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

    # --------------------------------------------------------------- helpers

    def _check_vectors(self, v, name, allow_matrix=True):
        array = np.asarray(v)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"`{name}` must be a real array; got dtype {array.dtype}.")
        shapes = f"({self.n},) or ({self.n}, k)" if allow_matrix else f"({self.n},)"
        if array.ndim not in ((1, 2) if allow_matrix else (1,)) or array.shape[0] != self.n:
            raise ValueError(f"`{name}` must have shape {shapes}; got {array.shape}.")
        return np.ascontiguousarray(array, dtype=np.float64)

    def _local_sum(self, function, args, shape):
        """Sum of `function` over this rank's batches (no communication)."""
        concrete = self._concrete(function)
        total = None
        for batch in self._batches:
            part = np.asarray(concrete(*args, *batch))
            # One copy out of TensorFlow's memory, then sums in place.
            total = np.array(part) if total is None else np.add(total, part, out=total)
        return np.zeros(shape) if total is None else total.reshape(shape)

    def _concrete(self, function):
        """The traced graph of `function`, called directly.

        Calling the concrete function skips the argument binding and type
        dispatch of ``tf.function`` (0.2-0.3 ms, ~8 % of a 100k-parameter HVP).
        """
        concrete = self._concrete_functions.get(function)
        if concrete is None:
            concrete = self._concrete_functions[function] = function.get_concrete_function()
        return concrete

    def _sum(self, function, shape, vector=None):
        """Sum of ``function([vector,] *batch)`` over all batches of all ranks.

        Collective over `comm`. Everything that can fail on one rank only
        (non-finite input, tracing the loss, running it) happens inside the
        collective sum, so that every rank raises instead of waiting.
        """

        def compute():
            args = ()
            if vector is not None:
                if not np.isfinite(vector).all():
                    raise ValueError("`v` has non-finite entries (NaN or inf).")
                args = (self._staging.tensor(vector),)
            with self._preserved_state(function):
                return self._local_sum(function, args, shape)

        return _mpi.collective_sum(compute, shape, self.comm)

    @contextlib.contextmanager
    def _preserved_state(self, function):
        """Restore variables (other than the parameters) that `function` changes.

        A training-mode call updates state such as BatchNorm statistics or a
        random generator's seed. The first call finds which captured
        variables changed; later calls snapshot and restore just those.
        """
        watched = self._mutable_state.get(function)
        first_call = watched is None
        if first_call:
            parameters = {id(v) for v in self._engine.variables}
            captured = self._concrete(function).variables
            watched = [v for v in captured if id(v) not in parameters]
        saved = [v.numpy() for v in watched]
        completed = False
        try:
            yield
            completed = True
        finally:
            if first_call:
                changed = [
                    (v, s)
                    for v, s in zip(watched, saved, strict=True)
                    if not np.array_equal(v.numpy(), s)
                ]
                # Learn only from a call that ran to the end: one that failed
                # before the forward pass changed nothing, which proves nothing.
                if completed:
                    self._mutable_state[function] = [v for v, _ in changed]
            else:
                changed = zip(watched, saved, strict=True)
            for variable, value in changed:
                variable.assign(value)

    def _check_deterministic(self):
        probe = np.random.default_rng(20260101).standard_normal(self.n)
        args = (tf.constant(probe),)
        shape = (2 * self.n,)
        tolerance = np.finfo(self.dtype.as_numpy_dtype).eps ** 0.5

        def compare():
            with self._preserved_state(self._engine.action):
                first = self._local_sum(self._engine.action, args, shape)
                second = self._local_sum(self._engine.action, args, shape)
            scale = max(np.linalg.norm(first), np.finfo(float).tiny)
            difference = np.linalg.norm(first - second) / scale
            if not difference <= tolerance:
                raise ValueError(
                    "the loss is not deterministic: two evaluations of the gradient "
                    f"and of a Hessian-vector product at the same point differ by "
                    f"{difference:.2e} (relative). Stochastic layers (Dropout, "
                    "GaussianNoise) in training mode or random operations in the loss "
                    "make the Hessian a random matrix; use training=False or remove "
                    "the randomness."
                )
            return np.zeros(1)

        _mpi.collective_sum(compare, (1,), self.comm)


def _symmetrize(matrix, block_size):
    """Replace `matrix` by (matrix + matrix.T) / 2 in place, one block row at a time.

    Round-off makes the assembled columns slightly asymmetric; averaging in
    blocks avoids the n-by-n temporary of ``matrix + matrix.T``.
    """
    n = matrix.shape[0]
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        average = 0.5 * (matrix[start:stop, start:] + matrix[start:, start:stop].T)
        matrix[start:stop, start:] = average
        matrix[start:, start:stop] = average.T


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
