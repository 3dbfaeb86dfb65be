"""A traced Hessian-vector product split into its primal passes and its second pass.

A product ``H v`` by reverse-over-reverse differentiation runs the forward
pass, the backward pass (the gradient ``g``) and the backward pass of
``g . v``. Only the last one reads ``v``. `SplitProduct` traces the whole
product once as a graph, finds the operations that depend on ``v`` and the
tensors they read from the rest (the *residuals*: activations, the loss's
derivatives, a ``while`` loop's accumulators, shapes), and cuts the graph
there into two functions:

- ``residuals = primal(*batch)``: the forward and backward passes, once
  per point and batch;
- ``hv, stale = second_pass(rows, *residuals)``: the second backward pass
  alone, for each product;
- ``hv, stale, *residuals = fresh(rows, *batch)``: the whole product, that
  also returns its residuals (the first product at a point).

TensorFlow keeps no intermediates between calls of one function, but a
tensor a function returns can be handed to another. Measured on the
784-128-10 MLP (512 samples, float32, 2-core CPU, same rounds, 11 rounds):
the second pass 1.02-1.10 gradients (its FLOP count: 1.02), the whole
fixed-point matvec 1.15-1.23, against 1.29-1.35 for the server threads
this replaced (a graph looping over a request queue: two thread hand-offs
per product) and 1.5-1.7 for a product from scratch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import lift_to_graph, wrap_function
from tensorflow.python.framework import func_graph
from tensorflow.python.ops import resource_variable_ops
from tensorflow.python.util import object_identity

__all__ = ["SplitProduct"]


class SplitProduct:
    """The primal passes and the second pass of one `Engine`'s product.

    Parameters
    ----------
    engine : Engine
        Its ``fixed_point_pass(rows, *batch) -> (hv_rows, stale)``
        is traced once, with the rows in the variables' dtype. An error of
        the loss while traced is raised.

    Attributes
    ----------
    dtype : tf.DType
        The dtype of the rows the second pass takes and gives.
    fixed_bytes, row_bytes : int
        The residuals' size for one batch: ``fixed_bytes + row_bytes * rows``
        for a batch of `rows` samples (from the traced shapes; a ``while``
        loop's accumulators, as of a recurrent layer, have no static size
        and are not counted).
    failure : str
        Why the product could not be cut (then the fixed point is not
        taken); empty when it was.
    """

    def __init__(self, engine):
        layout = engine.layout
        self.dtype = layout.working_dtype
        signature = [tf.TensorSpec([None, layout.n], self.dtype), *engine.batch_signature]
        wrapped = tf.compat.v1.wrap_function(engine.fixed_point_pass, signature)
        self.fixed_bytes = self.row_bytes = 0
        self.failure = ""
        try:
            self._cut(wrapped, len(signature))
        except Exception as exc:  # an op the copy cannot take: products as outside
            self.failure = f"{type(exc).__name__}: {exc}"

    def _cut(self, wrapped, inputs):
        request, *batch = wrapped.inputs[:inputs]
        dependent = _dependent(wrapped.graph, request.op)
        residuals = _residuals(wrapped.graph, dependent)
        # Residuals that are the data itself are taken from the batch.
        position = {id(t): i for i, t in enumerate(batch)}
        self._sources = [position.get(id(t)) for t in residuals]
        computed = [t for t in residuals if id(t) not in position]
        self._primal = wrapped.prune(batch, computed) if computed else None
        self._second = _lift(wrapped, [request, *residuals], dependent)
        try:
            # The whole product that also returns its residuals: at a new
            # point, one call instead of the primal passes and the second.
            self._fresh = wrapped.prune([request, *batch], [*wrapped.outputs, *computed])
        except Exception:  # the two calls then
            self._fresh = None
        self.fixed_bytes = _bytes(computed, 0)
        self.row_bytes = _bytes(computed, 1) - self.fixed_bytes

    def residuals(self, batch):
        """What the second pass reads of one batch, by its primal passes."""
        computed = iter(_call(self._primal, list(batch)) if self._primal else ())
        return [next(computed) if i is None else batch[i] for i in self._sources]

    def fresh(self, rows, batch):
        """The rows ``H v``, whether a variable changed, and the residuals of one batch.

        One call at a new point (the primal passes and the second pass of
        `rows` together), or the two calls where the whole product could
        not be pruned.
        """
        if self._fresh is None:
            residuals = self.residuals(batch)
            return (*self.second_pass(rows, residuals), residuals)
        hv, stale, *computed = _call(self._fresh, [rows, *batch])
        computed = iter(computed)
        residuals = [next(computed) if i is None else batch[i] for i in self._sources]
        return np.asarray(hv), bool(stale), residuals

    def second_pass(self, rows, residuals):
        """The rows ``H v`` for the rows v of `rows`, and whether a variable changed.

        The rows are a read-only view of TensorFlow's memory.
        """
        hv, stale = _call(self._second, [rows, *residuals])
        return np.asarray(hv), bool(stale)


def _dependent(graph, request):
    """The operations of `graph` that depend on `request`, by data or control edges."""
    consumers = {}
    for operation in graph.get_operations():
        for tensor in operation.inputs:
            consumers.setdefault(tensor.op, []).append(operation)
        for control in operation.control_inputs:
            consumers.setdefault(control, []).append(operation)
    dependent, stack = set(), [request]
    while stack:
        operation = stack.pop()
        if operation not in dependent:
            dependent.add(operation)
            stack.extend(consumers.get(operation, ()))
    return dependent


def _residuals(graph, dependent):
    """The tensors the `dependent` operations read from the others.

    Constants are left out (the second pass copies them) and so are the
    graph's captures (variables, captured tensors: the second pass captures
    them too). Everything else is a residual, whatever its cost: a random
    draw, in particular, is made once.
    """
    captures = {id(t) for t in graph.internal_captures}
    residuals, seen = [], set()
    for operation in graph.get_operations():
        if operation not in dependent:
            continue
        for tensor in operation.inputs:
            if (
                tensor.op not in dependent
                and tensor.op.type != "Const"
                and id(tensor) not in captures
                and id(tensor) not in seen
            ):
                seen.add(id(tensor))
                residuals.append(tensor)
    return residuals


def _lift(wrapped, feeds, dependent):
    """The `dependent` operations of `wrapped`, as a function of `feeds`.

    ``WrappedFunction.prune`` would copy the ancestors of the feeds too
    (as dead code), and fails on those of a ``while`` loop's accumulators
    (an LSTM's); here only the dependent operations are copied, in the
    order they were created (an order in which inputs come first), with
    the constants and captures they read. Control edges from the primal
    passes are dropped: those operations ran already, in the primal passes.
    """
    base = wrapped.graph
    with base.as_default():
        graph = func_graph.FuncGraph("second_pass")
    op_map = object_identity.ObjectIdentityDictionary()
    external = object_identity.ObjectIdentityDictionary()
    for outer, internal in base.captures:
        external[internal] = outer
    with graph.as_default():
        placeholders = []
        for tensor in feeds:
            placeholder = tf.compat.v1.placeholder(tensor.dtype, tensor.shape)
            handle = resource_variable_ops.get_resource_handle_data(tensor)
            if handle.shape_and_type:
                # A while loop's accumulators: the element shapes they hold.
                resource_variable_ops._set_handle_shapes_and_types(
                    placeholder, handle, graph_mode=True
                )
            op_map[tensor] = placeholder
            # Control edges from the request (the reads of the variables
            # after it) hold in the copy.
            op_map[tensor.op] = placeholder.op
            placeholders.append(placeholder)
        for operation in base.get_operations():
            if operation not in dependent or operation in op_map:
                continue  # the request itself is fed
            for tensor in operation.inputs:
                if tensor in op_map:
                    continue
                if tensor in external:
                    op_map[tensor] = graph.capture(external[tensor])
                elif tensor.op.type == "Const":
                    lift_to_graph._copy_non_source(tensor.op, graph, op_map, base)
                else:
                    raise ValueError(f"the second pass reads {tensor.name}, which is not fed.")
            lift_to_graph._copy_non_source(operation, graph, op_map, base)
    graph.inputs = placeholders + [internal for _, internal in graph.captures]
    graph.outputs = [op_map[t] for t in wrapped.outputs]
    graph.structured_outputs = list(graph.outputs)
    for function in base._functions.values():
        graph._add_function(function)
    graph.variables = base.variables
    return wrap_function.WrappedFunction(graph, variable_holder=wrapped._variable_holder)


def _call(function, args):
    """Call a pruned or lifted function with its flat list of tensors.

    Their structured signature does not bind the inputs:
    ``function(*args)`` tries it, fails, formats every argument into the
    error message it then discards and falls back to the flat call: 10 ms
    a product on the 784-128-10 MLP. The flat call is made directly.
    """
    return function._call_flat(args, function.captured_inputs)


def _bytes(tensors, rows):
    """Total size of `tensors`, their unknown dimensions set to `rows`."""
    total = 0
    for tensor in tensors:
        if tensor.dtype in (tf.resource, tf.variant, tf.string) or tensor.shape.rank is None:
            continue
        dims = [rows if d is None else d for d in tensor.shape.as_list()]
        total += int(np.prod(dims, dtype=np.int64)) * tensor.dtype.size
    return total
