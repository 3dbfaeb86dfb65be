"""The compiled functions behind one `Hessian`: loss, gradient, HVPs.

Each function is a ``tf.function`` with a fixed input signature (float64
vectors; blocks as float64 columns, or, in "auto" mode, as rows in the
variables' dtype; data batches with a ``None`` batch dimension), so it is
traced once per `Hessian` and never again. Each returns this rank's
contribution of one data batch, in float64 (row blocks: in their own
dtype); summing over batches and ranks is the caller's job.

Not every model admits every route. Vectorised blocks (``pfor``) cannot
convert the ``while`` loops of recurrent layers, and forward-mode
differentiation cannot enter them either. So a product is a `Routes`: the
preferred routes first, a route that works on every model last. The first
that traces is kept, decided once, at the first call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings

import tensorflow as tf

from ._layout import FlatLayout

HVP_MODES = ("auto", "reverse-over-reverse", "forward-over-reverse")

_ZERO = tf.UnconnectedGradients.ZERO

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class PerformanceWarning(UserWarning):
    """A product falls back to a slower route; its result is unchanged."""


class Engine:
    """Compiled loss, gradient and Hessian-vector products of one loss.

    Parameters
    ----------
    variables : list of tf.Variable
        The variables to differentiate with respect to.
    contribution : callable
        ``contribution(*batch) -> scalar tensor``: one batch's share of the
        loss (already divided by the global number of samples).
    batch_signature : tuple
        Input signature of one batch (``()`` for a loss without data).
    mode : {"auto", "reverse-over-reverse", "forward-over-reverse"}
        How Hessian-vector products are differentiated. "auto" uses
        reverse-over-reverse for single products and forward-over-reverse
        for blocks of columns.
    jit_compile : bool
        Compile the functions with XLA.

    Notes
    -----
    A block is one vectorised call (``tf.vectorized_map``) where the model
    allows it; otherwise (recurrent layers) a ``tf.while_loop`` over the
    columns inside one graph, which shares the forward and backward passes
    and repeats only the second backward pass per column. Forward mode,
    where it cannot differentiate the model (a ``while`` loop reading a
    variable), gives way to reverse-over-reverse. Both fallbacks warn once,
    with a `PerformanceWarning`.
    """

    def __init__(self, variables, contribution, batch_signature, *, mode, jit_compile):
        self.variables = list(variables)
        self.layout = FlatLayout(self.variables)
        self._contribution = contribution
        n = self.layout.n
        vector = [tf.TensorSpec([n], tf.float64)]
        matrix = [tf.TensorSpec([n, None], tf.float64)]
        rows = [tf.TensorSpec([None, n], self.layout.working_dtype)]
        batch = list(batch_signature)
        warned = set()

        def compile_(function, signature):
            return tf.function(function, input_signature=signature, jit_compile=jit_compile)

        def routes(*candidates):
            return Routes([(compile_(f, s), w) for f, s, w in candidates], warned)

        def hvp(route):
            return lambda vector, *data: self.layout.concat(route(vector, *data)[1])

        def action(route):
            def function(vector, *data):
                grads, hv = route(vector, *data)
                return tf.concat([self.layout.concat(grads), self.layout.concat(hv)], 0)

            return function

        def vectorised(route):
            def function(matrix, *data):
                def column(vector):
                    return self.layout.concat(route(vector, *data)[1])

                return tf.transpose(tf.vectorized_map(column, tf.transpose(matrix)))

            return function

        self.loss = compile_(self._loss, batch)
        self.value_and_gradient = compile_(self._value_and_gradient, batch)
        # "auto" blocks loop over the columns inside one graph: the forward
        # and backward passes once, then one more backward pass per column.
        # Per column, in units of a gradient (2-core CPU, 512 samples,
        # float32): 0.8 against 2.2 for a vectorised forward-over-reverse
        # block on a 784-128-10 MLP, 1.5 against 2.9 on 784-1024-256-10,
        # 1.8 against 2.3 on a small CNN. The forced modes keep vectorised
        # blocks (pfor: one copy of the tangent activations per column).
        block = self._reverse if mode == "reverse-over-reverse" else self._forward
        looped = (self._columns, matrix + batch, _LOOP_WARNING)
        if mode == "forward-over-reverse":
            self.hvp = routes(
                (hvp(self._forward), vector + batch, None),
                (hvp(self._reverse), vector + batch, _FORWARD_WARNING),
            )
            self.action = routes(
                (action(self._forward), vector + batch, None),
                (action(self._reverse), vector + batch, _FORWARD_WARNING),
            )
        else:
            self.hvp = routes((hvp(self._reverse), vector + batch, None))
            self.action = routes((action(self._reverse), vector + batch, None))
        # "auto" blocks take and give k vectors as the rows of a (k, n) tensor
        # in the variables' dtype (`block_rows`): the caller's copies cast,
        # and no transposes are needed (see `fixed_point_pass`); the others
        # take and give (n, k) float64 columns.
        self.block_rows = mode == "auto"
        if self.block_rows:
            self.hvp_block = routes((self._rows, rows + batch, None))
        else:
            self.hvp_block = routes((vectorised(block), matrix + batch, None), looped)
        # Traced, and split into its primal and second passes, by
        # `SplitProduct` (a fixed point's products).
        self.batch_signature = tuple(batch)

    @property
    def functions(self):
        """The compiled functions (for tracing checks)."""
        return (self.loss, self.value_and_gradient, self.hvp, self.hvp_block, self.action)

    def _scalar_loss(self, *batch):
        value = self._contribution(*batch)
        if value is None:
            raise TypeError("`loss` returned None; it must return a scalar tensor.")
        value = tf.convert_to_tensor(value)
        if value.shape.rank != 0:
            raise ValueError(f"`loss` must return a scalar tensor; got shape {tuple(value.shape)}.")
        if not value.dtype.is_floating:
            raise TypeError(
                f"`loss` must return a floating-point tensor; got dtype {value.dtype.name}."
            )
        return value

    def _gradient(self, *batch):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.variables)
            value = self._scalar_loss(*batch)
        return value, _dense(tape.gradient(value, self.variables, unconnected_gradients=_ZERO))

    def _loss(self, *batch):
        return tf.cast(self._scalar_loss(*batch), tf.float64)

    def _value_and_gradient(self, *batch):
        value, grads = self._gradient(*batch)
        return tf.concat(
            [tf.reshape(tf.cast(value, tf.float64), [1]), self.layout.concat(grads)], 0
        )

    def _inner(self, grads, tangents):
        # Sum in float64 only when the variables' dtypes differ.
        terms = [tf.reduce_sum(g * t) for g, t in zip(grads, tangents, strict=True)]
        if len({t.dtype for t in terms}) > 1:
            terms = [tf.cast(t, tf.float64) for t in terms]
        return tf.add_n(terms)

    def _reverse(self, vector, *batch):
        tangents = self.layout.split(vector)
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(self.variables)
            _, grads = self._gradient(*batch)
            directional = self._inner(grads, tangents)
        hv = outer.gradient(directional, self.variables, unconnected_gradients=_ZERO)
        return grads, _dense(hv)

    def _forward(self, vector, *batch):
        tangents = self.layout.split(vector)
        with tf.autodiff.ForwardAccumulator(self.variables, tangents) as accumulator:
            _, grads = self._gradient(*batch)
        hv = accumulator.jvp(grads, unconnected_gradients=_ZERO)
        return grads, hv

    def _columns(self, matrix, *batch):
        """H @ matrix by a loop over the columns inside the graph.

        The Hessian is symmetric, so ``H v`` is the vector-Jacobian product
        of the gradient with `v`: the forward and backward passes are
        recorded once, outside the loop, and each column costs one more
        backward pass (a vectorised block cannot go through a ``while``
        loop, and forward mode cannot enter one).
        """
        return self.layout.columns(self._rows(self.layout.rows(matrix), *batch))

    def _rows(self, rows, *batch):
        """``H v`` for each row v of `rows` ((k, n), `working_dtype`), as rows."""
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(self.variables)
            _, grads = self._gradient(*batch)
        return self._second_passes(outer, grads, rows)

    def _second_pass(self, outer, grads, vector):
        """``H v`` for one vector (a row in `working_dtype`): the backward pass of ``g . v``."""
        hv = outer.gradient(
            grads,
            self.variables,
            output_gradients=self.layout.split(vector),
            unconnected_gradients=_ZERO,
        )
        return self.layout.concat_row(_dense(hv))

    def _second_passes(self, outer, grads, rows):
        """``H v`` for each row v of `rows` ((k, n), `working_dtype`), in a loop.

        Each vector is a contiguous row (a block is transposed once, in the
        variables' dtype, or arrives as rows), and the rows run one after the other
        (each pass already uses every core). Per column on the 1.07M-parameter
        MLP (32 columns, float32, CPU time in units of a gradient, primal
        passes included, medians of 5 rounds on a loaded 2-core machine):
        1.58 against 2.06 with the transposes and casts in float64 and
        map_fn's default of 10 concurrent iterations. The loop reads row i
        of `rows` itself: ``tf.map_fn`` first unstacks the whole block into
        a TensorArray, a copy of it (137 MB for 32 columns of that MLP),
        which cost 3-9 % of a block at a fixed point there (21.9-22.2
        against 22.6-24.4 ms per column, one process, alternated rounds).
        """
        count = tf.shape(rows)[0]
        results = tf.TensorArray(
            self.layout.working_dtype, size=count, element_shape=[self.layout.n]
        )

        def step(i, results):
            return i + 1, results.write(i, self._second_pass(outer, grads, rows[i]))

        _, results = tf.while_loop(
            lambda i, _: i < count,
            step,
            (tf.constant(0), results),
            parallel_iterations=_SEQUENTIAL,
        )
        return results.stack()

    def fixed_point_pass(self, rows, *batch):
        """``H v`` for each row v of `rows`, and whether a variable the loss reads changed.

        Traced as a graph and cut by `SplitProduct` where the operations
        start to read `rows`: what comes before (the forward and backward
        passes, a snapshot of every variable the loss reads: parameters,
        BatchNorm statistics, frozen weights) runs once per point, the rest
        (one more backward pass per vector, the comparison of the variables
        with the snapshot, bit for bit) once per product. Rows in the
        variables' dtype, not float64 columns: the caller's blocks (probes
        drawn row by row, Fortran-ordered) then need no transposes, which
        took 14 ms of a 33-column block's 130 ms on the 784-128-10 MLP, and
        the casts happen in the copies the caller makes anyway.
        """
        with tf.GradientTape(watch_accessed_variables=False, persistent=True) as outer:
            outer.watch(self.variables)
            _, grads = self._gradient(*batch)
        watched = _read_variables(self.variables)
        snapshot = [_bits(tf.identity(v)) for v in watched]
        # Read the variables for each product (the reads depend on `rows`),
        # not once with the passes.
        with tf.control_dependencies([rows]):
            moved = [
                tf.reduce_any(tf.not_equal(_bits(tf.identity(v)), s))
                for v, s in zip(watched, snapshot, strict=True)
            ]
        stale = tf.reduce_any(tf.stack(moved)) if moved else tf.constant(False)
        # A stale answer is thrown away: it is not computed.
        product = tf.cond(
            stale,
            lambda: tf.zeros_like(rows),
            lambda: tf.cond(
                # One vector (the common case) without the loop's overhead.
                tf.equal(tf.shape(rows)[0], 1),
                lambda: self._second_pass(outer, grads, rows[0])[None, :],
                lambda: self._second_passes(outer, grads, rows),
            ),
        )
        return product, stale


# Columns of a block one after the other: each backward pass already uses
# every core, and concurrent ones (map_fn's default runs 10) hold their
# intermediates at once and compete for the cores and caches.
_SEQUENTIAL = 1


def _read_variables(parameters):
    """The variables read so far in the graph being traced, the `parameters` first.

    The graph notes every variable read while it is built (TensorFlow's own
    record, kept for its ``variables``); the loss has been traced by now.
    """
    graph = tf.compat.v1.get_default_graph()
    parameters = list(parameters)
    known = {id(v) for v in parameters}
    others = [v for v in getattr(graph, "_watched_variables", ()) if id(v) not in known]
    return parameters + sorted(others, key=lambda v: v.name)


def _bits(tensor):
    """The bit pattern of a floating-point tensor, as integers (NaN equals itself).

    Other tensors (integers, booleans: a seed generator's state) are compared as they are.
    """
    if not tensor.dtype.is_floating:
        return tensor
    integer = {2: tf.int16, 4: tf.int32, 8: tf.int64}[tensor.dtype.size]
    return tf.bitcast(tensor, integer)


_LOOP_WARNING = (
    "vectorized HVP blocks are not supported by this model ({reason}); products "
    "of a block are computed column by column inside one graph."
)
_FORWARD_WARNING = (
    "forward-over-reverse products are not supported by this model ({reason}); "
    "using reverse-over-reverse."
)


class Routes:
    """The first of several compiled routes to one product that traces.

    Behaves like the chosen ``tf.function``: `get_concrete_function` makes
    the choice at its first call and returns the chosen graph ever after.
    A route that fails to trace is abandoned; one that is taken in its
    place issues its warning (each distinct message once per `Engine`).
    If every route fails, the last one's error is raised.

    Parameters
    ----------
    candidates : list of (tf.function, str or None)
        Routes in order of preference, each with the warning to issue when
        it is taken in place of an earlier one (``{reason}`` is filled in
        with why the previous route failed).
    warned : set of str
        Messages already issued, shared by the routes of one `Engine`.
    """

    def __init__(self, candidates, warned):
        self._candidates = list(candidates)
        self._warned = warned
        self._chosen = None

    def get_concrete_function(self):
        """The traced graph of the chosen route (chosen and traced at the first call)."""
        if self._chosen is not None:
            return self._chosen.get_concrete_function()
        failure = None
        for index, (function, message) in enumerate(self._candidates):
            try:
                with _quiet_pfor():
                    concrete = function.get_concrete_function()
            except Exception as exc:
                # pfor and forward mode fail at tracing, with many exception
                # types; what the last route cannot trace, no route can.
                if index == len(self._candidates) - 1:
                    raise
                failure = exc
            else:
                if failure is not None and message is not None:
                    self._warn(message.format(reason=_reason(failure)))
                self._chosen = function
                return concrete

    def __call__(self, *args):
        return self.get_concrete_function()(*args)

    def experimental_get_tracing_count(self):
        """Traces of all routes (a route that failed to trace counts none)."""
        return sum(f.experimental_get_tracing_count() for f, _ in self._candidates)

    def _warn(self, message):
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, PerformanceWarning, stacklevel=_caller_level())


def _dense(tensors):
    """Densify ``tf.IndexedSlices`` (gradients of a gather, as in Embedding).

    ForwardAccumulator and pfor take dense tensors only; the densified
    gradient is itself differentiable, so every route works on it.
    """
    return [tf.convert_to_tensor(t) if isinstance(t, tf.IndexedSlices) else t for t in tensors]


class _PforFilter(logging.Filter):
    """Drop the records of ``tf.vectorized_map``'s converter.

    A failed conversion logs every op it tried (over a thousand lines for
    one LSTM) and a successful one may log each op it had to loop over.
    """

    def filter(self, record):
        return f"{os.sep}parallel_for{os.sep}" not in record.pathname


@contextlib.contextmanager
def _quiet_pfor():
    logger = tf.get_logger()
    pfor_filter = _PforFilter()
    logger.addFilter(pfor_filter)
    try:
        yield
    finally:
        logger.removeFilter(pfor_filter)


def _reason(exc):
    """Why a route failed to trace, in a few words."""
    # Graph names of the ops pfor wraps ("loop_body/...", ".../pfor/while")
    # name no layer; the first other scope before "/while" is the layer's.
    names = re.findall(r"([A-Za-z][\w.]*)/while", str(exc))
    layers = [name for name in names if name not in ("pfor", "loop_body", "gradients")]
    if layers:
        return f"while loop: {layers[0]}"
    return type(exc).__name__


def _caller_level():
    """`stacklevel` that points a warning at the first frame outside this package.

    Frames of `contextlib` are skipped too: the package's context managers
    sit between its own frames.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level


def _is_internal(filename):
    return filename.startswith(_PACKAGE_DIR + os.sep) or filename == contextlib.__file__
