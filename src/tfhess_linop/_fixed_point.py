"""Hessian-vector products at fixed parameters, the primal passes paid once.

A product ``H v`` by reverse-over-reverse differentiation runs the forward
pass, the backward pass (the gradient ``g``) and then the backward pass of
``g . v``. While the parameters stay where they are, the first two are the
same for every ``v``: a product needs only the last pass, the
vector-Jacobian product of the gradient with ``v`` (``H`` is symmetric).

TensorFlow keeps the intermediates of a pass only inside the graph that
computed them. So each data batch gets one *server*: a ``tf.function``,
running in a thread of its own, that computes the forward and backward
passes once and then loops (a ``tf.while_loop``) over requests taken from
a queue, answering each with the second backward pass alone. Measured on
the 784-128-10 MLP (512 samples, float32, 2-core CPU): 1.0-1.1x a gradient
per product, against 1.3-1.8x for a full product.

A server reads the parameters once, when it starts. Each answer carries a
flag that says whether the parameters still hold those values (compared
bit for bit, in the graph); a stale answer is thrown away and the servers
restart at the new point, so assignments and optimizer steps between
products are always seen.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import gen_data_flow_ops

from ._engine import PerformanceWarning, _caller_level
from ._staging import Staging

__all__ = ["FixedPoint", "ServerResources", "default_memory_budget", "graph_bytes"]

# The commands a request carries.
_PRODUCT, _STOP = 0, 1


def default_memory_budget():
    """Bytes the servers may hold: an eighth of the machine's memory, at most 4 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(min(4 * 2**30, total // 8))


def graph_bytes(graph, rows):
    """An upper bound of the memory one pass of `graph` holds, in bytes.

    The sum of the sizes of every tensor the graph's operations produce,
    with unknown dimensions (the batch dimension) set to `rows`. A server
    keeps at most these tensors alive: the intermediates the second
    backward pass reads are a subset of them.
    """
    total = 0
    for operation in graph.get_operations():
        for tensor in operation.outputs:
            if tensor.dtype in (tf.resource, tf.variant, tf.string) or tensor.shape.rank is None:
                continue
            dims = [rows if d is None else d for d in tensor.shape.as_list()]
            total += int(np.prod(dims, dtype=np.int64)) * tensor.dtype.size
    return total


class ServerResources:
    """What the fixed-point blocks of one `Hessian` share, one block after another.

    Each block used to walk the server's graph for its memory estimate,
    look up its concrete function and create two queues per server: entering
    a block and leaving it cost 14 ms beyond its products on the 784-128-10
    MLP (4.5 gradients), paid by every algorithm call; 4 ms now. The
    estimate depends only on the graph and is kept; queues of servers that
    stopped cleanly are reused.

    Parameters
    ----------
    engine : Engine
        The Hessian's compiled functions; ``engine.serve`` is the server.
    """

    def __init__(self, engine):
        self.concrete = engine.serve.get_concrete_function()
        self.n = engine.layout.n
        # Requests (rows, command) and replies (rows, stale flag) carry the
        # rows in the variables' dtype (see Engine._serve).
        self.dtype = engine.layout.working_dtype
        self.request_dtypes = [self.dtype, tf.int32]
        self.reply_dtypes = [self.dtype, tf.bool]
        self.fixed_bytes = graph_bytes(self.concrete.graph, 0)
        self.row_bytes = graph_bytes(self.concrete.graph, 1) - self.fixed_bytes
        self._idle_queues = []

    def queues(self):
        """A (requests, replies) pair of empty queues."""
        if self._idle_queues:
            return self._idle_queues.pop()
        return (
            tf.queue.FIFOQueue(1, self.request_dtypes),
            tf.queue.FIFOQueue(1, self.reply_dtypes),
        )

    def give_back(self, queues):
        """Keep the queues of a server that stopped cleanly (both are empty)."""
        self._idle_queues.append(queues)


class FixedPoint:
    """The servers of one `Hessian` for one stretch of fixed parameters.

    Parameters
    ----------
    resources : callable
        Returns the Hessian's `ServerResources` (made at the first call,
        which traces the server: only inside a product's collective sum).
    batches : iterable of tuples
        This rank's data batches (each batch is read once per start).
    memory_budget : int
        Most bytes the servers may hold (by `graph_bytes`). Over it, the
        fixed point is not taken: `active` is False and `reason` says why.
    parameters : list of tf.Variable
        The parameters (the variables a server must not restore).

    Attributes
    ----------
    active : bool or None
        None before the first product, then whether products go through
        the servers.
    reason : str
        Why the servers are not used, when `active` is False.
    starts : int
        How often the servers were started (one more after each change of
        the parameters).
    """

    def __init__(self, resources, batches, *, memory_budget, parameters):
        self._resources_of = resources
        self._batches = batches
        self._budget = int(memory_budget)
        self._parameters = {id(v) for v in parameters}
        self._servers = []
        self.active = None
        self.reason = ""
        self.starts = 0
        self.estimated_bytes = None
        self._staging = Staging()

    @property
    def _resources(self):
        return self._resources_of()

    def product(self, matrix):
        """This rank's ``H @ matrix`` (float64, (n, k)); `active` must be True."""
        for _ in range(3):
            if not self._servers:
                self._start()
            try:
                result, stale = self._ask(matrix)
            except BaseException:
                # A failed pass (or an interrupt) leaves no server behind:
                # the next product starts afresh.
                self.close()
                raise
            if not stale:
                return result
            # The parameters moved since the servers read them.
            self.close()
        raise RuntimeError("the parameters changed during every one of three products.")

    def invalidate(self):
        """Stop the servers; the next product starts them at the current point."""
        self.close()

    def close(self):
        """Stop the servers and wait for their threads."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.stop()
        self._staging.release()

    # ----------------------------------------------------------------- inside

    def fits(self):
        """Whether the servers' estimated memory is within the budget (warns if not)."""
        resources = self._resources
        rows = [_rows(batch) for batch in self._batches]
        self.estimated_bytes = int(
            sum(resources.fixed_bytes + resources.row_bytes * r for r in rows)
        )
        if self.estimated_bytes <= self._budget:
            return True
        self.reason = (
            f"fixed-point products would hold about {self.estimated_bytes / 2**20:.0f} MiB "
            f"of intermediates, over the budget of {self._budget / 2**20:.0f} MiB; "
            "each product recomputes the forward and backward passes."
        )
        warnings.warn(self.reason, PerformanceWarning, stacklevel=_caller_level())
        return False

    def _start(self):
        resources = self._resources
        concrete = resources.concrete
        state = [(v, v.numpy()) for v in concrete.variables if id(v) not in self._parameters]
        self._servers = [_Server(resources, batch) for batch in self._batches]
        self.starts += 1
        self._restore = state

    def _ask(self, matrix):
        # The servers take and give the vectors as rows, in the variables'
        # dtype (see Engine._serve).
        request = self._staging.tensor(matrix.T, self._resources.dtype.as_numpy_dtype)
        for server in self._servers:
            server.send(request)
        total, stale = None, False
        for server in self._servers:
            part, part_stale = server.receive()
            stale = stale or part_stale
            # The first part is copied (the reply's buffer belongs to TF) and
            # cast to float64 in the same pass.
            if total is None:
                total = np.array(part, dtype=np.float64)
            else:
                np.add(total, part, out=total)
        if self._restore:
            # The servers' forward passes are done: undo what they changed
            # (BatchNorm statistics in training mode, seed generators).
            for variable, value in self._restore:
                if not np.array_equal(variable.numpy(), value):
                    variable.assign(value)
            self._restore = []
        return total.T, stale


class _Server:
    """One batch's server thread and its two queues.

    Requests and replies go through the queues' raw ops: the Python
    wrappers' dtype checks cost 30 us a round trip, about 1 % of a product
    on the 784-128-10 MLP, and the dtypes are fixed here.
    """

    def __init__(self, resources, batch):
        self._resources = resources
        self._requests, self._replies = resources.queues()
        self._error = None
        self._product = tf.constant(_PRODUCT)
        self._thread = threading.Thread(
            target=self._run,
            args=(resources.concrete, batch),
            name="tfhess_linop-fixed-point",
            daemon=True,
        )
        self._thread.start()

    def _run(self, concrete, batch):
        try:
            concrete(self._requests.queue_ref, self._replies.queue_ref, *batch)
        except BaseException as exc:  # handed to the caller by receive()
            self._error = exc
            self._replies.close(cancel_pending_enqueues=True)

    def send(self, matrix):
        gen_data_flow_ops.queue_enqueue_v2(self._requests.queue_ref, [matrix, self._product])

    def receive(self):
        """The reply: a read-only view of the rows ``H v`` and the stale flag."""
        try:
            hv, stale = gen_data_flow_ops.queue_dequeue_v2(
                self._replies.queue_ref, self._resources.reply_dtypes
            )
        except (tf.errors.OutOfRangeError, tf.errors.CancelledError):
            self._thread.join()
            raise self._error from None
        return np.asarray(hv), bool(stale)

    def stop(self):
        clean = False
        if self._thread.is_alive() and self._error is None:
            self._requests.enqueue(
                [tf.zeros([0, self._resources.n], self._resources.dtype), tf.constant(_STOP)]
            )
            try:
                self._replies.dequeue()
                clean = True
            except (tf.errors.OutOfRangeError, tf.errors.CancelledError):
                pass
        self._thread.join()
        # After an interrupted product the stop's reply is left behind:
        # only queues known to be empty are reused.
        if clean and self._error is None and self._empty():
            self._resources.give_back((self._requests, self._replies))

    def _empty(self):
        return int(self._requests.size()) == 0 and int(self._replies.size()) == 0


def _rows(batch):
    """Number of samples in one batch (1 for a loss without data)."""
    for leaf in tf.nest.flatten(batch):
        shape = getattr(leaf, "shape", None)
        if shape is not None and len(shape) > 0 and shape[0] is not None:
            return int(shape[0])
    return 1
