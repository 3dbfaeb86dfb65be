"""Everything that touches MPI.

This is the only module that imports :mod:`mpi4py`, and it does so lazily:
the package works without it, and ``comm=None`` always means "one process".

The rules it enforces (see the design notes):

- Hot-path reductions are one in-place, buffer-based ``Allreduce`` on a
  contiguous float64 array, never pickled lower-case collectives.
- Random draws are made on every rank (so identically seeded generators stay
  in step) and then overwritten by rank 0's draw, so ranks never diverge.
- No rank is left waiting, whatever happens on another one (below).

Failures and mismatched calls
-----------------------------
Each collective sum comes with a status exchange: one non-blocking
``Iallreduce(MAX)`` of three float64 numbers, ``[flag, s, -s]``, started
before this rank computes its contribution and finished after, where ``s``
is a 48-bit hash of what the rank is doing (the enclosing public call with
its arguments, and the shape of the product) and the flag says that a rank
left its call (below). Every rank gets the same reduced status, so they all
take the same branch:

- if the hashes differ (``max(s) != min(s)``), the ranks are not making the
  same call (ranks calling ``eigsh`` with different ``k``, or different
  functions), and every rank raises :class:`CollectiveError` listing what
  each rank was doing, instead of summing unrelated buffers or failing in
  MPI with "Message truncated";
- otherwise the shapes agree, and the contributions are summed in one
  ``Allreduce`` whose last slot is an error flag: if some rank's
  ``compute`` raised (any :class:`BaseException`: ``KeyboardInterrupt``,
  ``SystemExit`` and ``GeneratorExit`` included), the ranks exchange their
  messages, the failing ranks re-raise their own exception and the others
  raise :class:`CollectiveError` naming them.

The exchange runs while the rank computes, so its latency is mostly hidden:
on the 2-core machine of this project, shared with other jobs (load 6),
2 ranks, a 101,770-parameter MLP on 512 samples, a product took 18.7 ms
against 18.1 ms with a bare ``Allreduce`` (median of 10 interleaved runs of
100 products; the runs themselves varied by ±2-4 ms). Without any
computation to hide behind, the exchange costs one small-message latency
(0.6 ms there, under that load; microseconds on an idle machine).

The public algorithms (``eigsh``, ``cg``, ...) run inside
:func:`collective_call`, which makes the same exchange when the call starts
(so a mismatch is found before any product) and when it ends. A rank that
leaves the call with an exception raised outside a product (an interrupt in
SciPy's code between two products, an argument check that failed on this
rank only) says so in that last exchange; the other ranks are then at their
next product or at the end of the call, receive it there, and raise too.

Interrupts. ``SIGINT`` is held back while a rank is inside an exchange and
delivered as soon as the exchange is complete, so that a ``KeyboardInterrupt``
never leaves a rank half-way through a sequence of collectives that the
others complete. Where one rank still cannot take part any more (any other
exception inside the exchange, e.g. an MPI error from a collective that does
not match, or a signal handler raising ``SystemExit``), it aborts the
communicator with ``MPI_Abort``, after printing the reason: the job ends
rather than hangs. An exception raised on one rank *between* bare products
(``H.hvp`` in a user's own loop) cannot be seen by the others; run such
scripts as ``mpiexec -n P python -m mpi4py script.py``, which aborts the job
on an uncaught exception.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import hashlib
import numbers
import os
import signal
import sys
import threading
import traceback
import warnings

import numpy as np

try:
    # The C functions behind `signal.signal` and `signal.getsignal`: those two
    # convert their results to enums, through a caught ValueError, which costs
    # 10-13 µs a call, against under 1 µs here; they run twice per product.
    import _signal as _signals
except ImportError:  # pragma: no cover - not CPython
    _signals = signal

__all__ = [
    "CollectiveError",
    "agree",
    "allgather_object",
    "broadcast_array",
    "collective_call",
    "collective_sum",
    "configure_threads",
    "draw",
    "rank",
    "resolve_comm",
    "size",
    "world",
]

# Environment variables through which common launchers announce the number of
# ranks, read before mpi4py (and MPI_Init) is ever imported.
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class CollectiveError(RuntimeError):
    """Raised on every rank when another rank failed inside a collective call."""


def resolve_comm(comm):
    """Return `comm` checked to be an mpi4py communicator, or None for serial runs."""
    if comm is None:
        return None
    for method in ("Get_size", "Get_rank", "Allreduce", "Bcast"):
        if not hasattr(comm, method):
            raise TypeError(
                f"`comm` must be an mpi4py communicator (e.g. MPI.COMM_WORLD) or None, "
                f"got {type(comm).__name__}."
            )
    return comm


def size(comm) -> int:
    """Number of ranks in `comm` (1 for ``comm=None``)."""
    return 1 if comm is None else comm.Get_size()


def rank(comm) -> int:
    """This process's rank in `comm` (0 for ``comm=None``)."""
    return 0 if comm is None else comm.Get_rank()


def _mpi():
    from mpi4py import MPI

    return MPI


def world():
    """``MPI.COMM_WORLD``, importing mpi4py (and initialising MPI) on first use."""
    return _mpi().COMM_WORLD


def collective_sum(compute, shape, comm):
    """Sum ``compute()`` over the ranks of `comm`, failing on all ranks together.

    Collective over `comm`. A status exchange precedes the sum (see the
    module notes): every rank learns whether some rank failed and whether
    all ranks are making the same call before any data is summed.

    Parameters
    ----------
    compute : callable
        Zero-argument function returning this rank's float64 contribution,
        an array of shape `shape`.
    shape : tuple of int
        Shape of the result.
    comm : mpi4py communicator or None
        With None, ``compute()`` is returned as it is.

    Returns
    -------
    ndarray
        The sum over ranks, the same on every rank.

    Raises
    ------
    CollectiveError
        On the ranks that did not fail, when any rank's `compute` raised (any
        ``BaseException``); the failing ranks re-raise their own exception.
        On every rank, when the ranks are not making the same call.
    """
    if comm is None or comm.Get_size() == 1:
        return np.asarray(compute(), dtype=np.float64).reshape(shape)
    description, signature = _product_signature(_CALLS.get(), tuple(shape))
    buffer = np.zeros(int(np.prod(shape, dtype=np.int64)) + 1)
    error = status = None
    try:
        # The exchange runs while this rank computes, so that its latency is
        # hidden; an interrupt while it is started waits for the start to end.
        with _HeldInterrupts():
            status = _start_status(comm, _OK, signature)
        buffer[:-1] = np.asarray(compute(), dtype=np.float64).reshape(-1)
    except BaseException as exc:  # re-raised below, on every rank
        error = exc
        buffer[-1] = 1.0
    with _exchange(comm):
        if status is None:
            raise error
        _check_status(comm, status, description, error)
        # The shapes agree: the error flag rides in the sum's last slot.
        comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
        if buffer[-1] != 0.0:
            _raise_together(comm, description, error)
    return buffer[:-1].reshape(shape)


# Status flags of the exchange; the reduction keeps the largest.
_OK, _FAILED, _LEFT = 0.0, 1.0, 2.0

# The public collective calls this thread is inside, outermost first: the
# outermost with its arguments, the nested ones by name.
_CALLS = contextvars.ContextVar("tfhess_linop_collective_calls", default=())

# Exceptions every rank knows about (raised after an exchange), for objects
# that take no attribute.
_AGREED = collections.deque(maxlen=16)
_AGREED_ATTRIBUTE = "_tfhess_linop_agreed"


def _signature(description):
    """48-bit hash of `description`, the same in every process, exact in float64."""
    digest = hashlib.blake2b(description.encode(), digest_size=6).digest()
    return float(int.from_bytes(digest, "little"))


@functools.lru_cache(maxsize=1024)
def _product_signature(calls, shape):
    description = " > ".join((*calls, f"product of shape {shape}"))
    return description, _signature(description)


def _mark_agreed(exc):
    try:
        setattr(exc, _AGREED_ATTRIBUTE, True)
    except (AttributeError, TypeError):
        _AGREED.append(exc)
    return exc


def _is_agreed(exc):
    """Whether `exc`, or an exception it was raised from or during, is known to every rank."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, _AGREED_ATTRIBUTE, False) or any(exc is e for e in _AGREED):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _describe_exception(exc):
    text = str(exc)
    return type(exc).__name__ + (f": {text}" if text else "")


def _start_status(comm, flag, signature):
    """Start the status exchange: a non-blocking ``Allreduce(MAX)`` of ``[flag, s, -s]``.

    Returns ``(status, request)``; every status exchange (products, entries
    and exits of calls) is this same operation, so that any two of them
    match across ranks.
    """
    status = np.array([flag, signature, -signature])
    return status, comm.Iallreduce(_mpi().IN_PLACE, status, op=_mpi().MAX)


def _check_status(comm, started, description, error):
    """Finish a status exchange; raise on every rank if a rank left or the calls differ.

    Collective over `comm`. `error` is this rank's exception (None if none).
    """
    status, request = started
    request.Wait()
    if status[0] != _OK or status[1] != -status[2]:
        _raise_together(comm, description, error)


def _agree_status(comm, flag, description, signature, error):
    """A whole status exchange (for the entry and the exit of a collective call)."""
    _check_status(comm, _start_status(comm, flag, signature), description, error)


def _raise_together(comm, description, error):
    """Raise on every rank once all ranks know that something went wrong.

    Collective over `comm`. The ranks exchange what they were doing and
    their exceptions; a rank with an exception re-raises it, the others
    raise :class:`CollectiveError` naming the failed ranks or, where none
    failed, listing the mismatched calls.
    """
    message = None if error is None else _describe_exception(error)
    reports = comm.allgather((description, message))
    if error is not None:
        raise _mark_agreed(error)
    failed = [(r, d, m) for r, (d, m) in enumerate(reports) if m is not None]
    if failed:
        raise _mark_agreed(
            CollectiveError(
                "another rank failed in a collective call; "
                + "; ".join(f"rank {r}: {m} (in {d})" for r, d, m in failed)
            )
        )
    raise _mark_agreed(
        CollectiveError(
            "the ranks are not making the same collective call (every rank must "
            "call the same functions, with the same arguments, in the same order): "
            + "; ".join(f"rank {r}: {d}" for r, (d, _) in enumerate(reports))
        )
    )


class _HeldInterrupts:
    """Hold ``SIGINT`` back until the block ends, then deliver it.

    Only the main thread runs Python signal handlers, so only there is
    there anything to hold back.
    """

    def __enter__(self):
        self.previous = self.received = None
        if threading.current_thread() is threading.main_thread():
            previous = _signals.getsignal(signal.SIGINT.value)
            if callable(previous):
                self.previous = previous
                _signals.signal(signal.SIGINT.value, self._record)
        return self

    def _record(self, signum, frame):
        self.received = (signum, frame)

    def __exit__(self, exc_type, exc, tb):
        if self.previous is not None:
            _signals.signal(signal.SIGINT.value, self.previous)
            if self.received is not None:
                self.previous(*self.received)
        return False


@contextlib.contextmanager
def _exchange(comm):
    """Run a sequence of collectives that every rank must complete.

    ``SIGINT`` waits for the end of the block. An exception that the ranks
    agreed on passes; any other one means this rank cannot complete the
    sequence that the others are in, so the communicator is aborted.
    """
    with _HeldInterrupts():
        try:
            yield
        except BaseException as exc:
            if not _is_agreed(exc):
                _abort(comm, exc)
            raise


def _abort(comm, exc):
    """Abort `comm` after saying why: a rank that cannot go on must not leave others waiting."""
    sys.stderr.write(
        f"tfhess_linop: rank {comm.Get_rank()} cannot complete a collective call "
        f"({_describe_exception(exc)}); aborting the communicator so that no rank "
        "waits for it forever.\n"
    )
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    comm.Abort(1)


def _describe(value):
    """A short, process-independent text for one argument of a collective call."""
    if value is None or isinstance(value, (bool, str)):
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, numbers.Complex):
        return repr(complex(value))
    shape = getattr(value, "shape", None)
    if isinstance(value, np.ndarray) or shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    if callable(value):
        return "a callable"
    return type(value).__name__


class collective_call:  # lower case: used like a function, `with collective_call(...)`
    """Mark a block as one public collective call over `comm`.

    Collective over `comm`. On entry (outermost call only) the ranks check
    that they all make the same call: `name` and the described `arguments`
    (numbers and strings by value, arrays by shape). On exit they exchange
    their status again, so that a rank leaving with an exception that the
    others did not see (raised outside a product) makes them raise too, at
    their next product or at the end of the call. Nested calls (``svds``
    calling ``eigsh``) only add their name to the description of the
    products inside them. Serial runs (``comm`` None or one rank) do
    nothing.

    Parameters
    ----------
    comm : mpi4py communicator or None
    name : str
        The public function, e.g. ``"eigsh"``.
    **arguments
        The arguments that every rank must pass alike.
    """

    def __init__(self, comm, name, **arguments):
        self.comm, self.name, self.arguments = comm, name, arguments

    def __enter__(self):
        self._token = None
        if self.comm is None or self.comm.Get_size() == 1:
            return self
        outer = _CALLS.get()
        self._outermost = not outer
        if self._outermost:
            described = ", ".join(f"{k}={_describe(v)}" for k, v in self.arguments.items())
            self._description = f"{self.name}({described})"
        else:
            self._description = self.name
        self._token = _CALLS.set((*outer, self._description))
        if not self._outermost:
            return self
        description = "entering " + self._description
        try:
            with _exchange(self.comm):
                _agree_status(self.comm, _OK, description, _signature(description), None)
        except BaseException as exc:
            if _is_agreed(exc):
                _CALLS.reset(self._token)
                raise
            # An interrupt held back over the exchange: the other ranks are in
            # the call now, so leave it the way the call's body would.
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._token is None:
            return False
        try:
            if self._outermost and (exc is None or not _is_agreed(exc)):
                description = "leaving " + self._description
                with _exchange(self.comm):
                    _agree_status(
                        self.comm,
                        _OK if exc is None else _LEFT,
                        description,
                        _signature(description),
                        exc,
                    )
        finally:
            _CALLS.reset(self._token)
        return False


def agree(ok: bool, message: str, comm, exc_type=ValueError):
    """Raise `exc_type` on every rank unless `ok` holds on every rank.

    Collective over `comm`. Used for construction-time checks.
    """
    if comm is not None:
        ok = bool(comm.allreduce(int(bool(ok)), op=_mpi().MIN))
    if not ok:
        raise exc_type(message)


def allgather_object(value, comm):
    """List of `value` from every rank (``[value]`` serially). Collective over `comm`."""
    return [value] if comm is None else comm.allgather(value)


def broadcast_array(array, comm, root=0):
    """Overwrite `array` in place with `root`'s copy and return it.

    Collective over `comm`. Every rank passes an array of the same shape and
    dtype; only `root`'s values matter.
    """
    array = np.ascontiguousarray(array)
    if comm is not None and comm.Get_size() > 1:
        comm.Bcast(array, root=root)
    return array


def draw(rng, shape, comm, distribution="normal"):
    """Draw a random float64 array that is identical on every rank.

    Collective over `comm`. Every rank draws from its own generator (so
    identically seeded generators stay in step), then rank 0's draw is
    broadcast over the others.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Shape of the draw.
    comm : mpi4py communicator or None
    distribution : {"normal", "rademacher", "uniform"}
        Standard normal entries, random signs, or uniform on [0, 1).
    """
    if distribution == "normal":
        sample = rng.standard_normal(shape)
    elif distribution == "rademacher":
        sample = rng.choice(np.array([-1.0, 1.0]), size=shape)
    elif distribution == "uniform":
        sample = rng.random(shape)
    else:
        raise ValueError(
            f"`distribution` must be 'normal', 'rademacher' or 'uniform', got {distribution!r}."
        )
    return broadcast_array(np.asarray(sample, dtype=np.float64), comm)


def launcher_size() -> int:
    """Number of ranks announced by the MPI launcher's environment (1 if none)."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def configure_threads(intra_op: int = 1, inter_op: int = 1) -> bool:
    """Set TensorFlow's thread pools, e.g. one thread per MPI rank.

    With several ranks on one machine, TensorFlow's default of one thread
    per core in every process oversubscribes the cores (on 2 cores, a 2-rank
    matvec of a 100k-parameter MLP on 8,192 samples took 26.8 ms with default
    threads against 25.3 ms with one thread per rank). TensorFlow fixes its
    thread pools when its runtime starts, so call this before any TensorFlow
    operation runs; the package does it on import when launched under
    ``mpiexec`` with more than one rank
    (set ``TFHESS_LINOP_THREADS=default`` to keep TensorFlow's defaults, or
    ``TFHESS_LINOP_THREADS=N`` for N intra-op threads).

    Parameters
    ----------
    intra_op, inter_op : int
        Threads inside one operation and across independent operations;
        0 means TensorFlow's default.

    Returns
    -------
    bool
        True if the setting is in force, False if TensorFlow had already
        started with another one (a warning says so).

    Raises
    ------
    TypeError, ValueError
        When `intra_op` or `inter_op` is not a non-negative integer.
    """
    for value, name in ((intra_op, "intra_op"), (inter_op, "inter_op")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"`{name}` must be a non-negative integer, got {value!r}.")
        if value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer, got {value}.")
    intra_op, inter_op = int(intra_op), int(inter_op)
    import tensorflow as tf

    threading = tf.config.threading
    current = (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    )
    if current == (intra_op, inter_op):
        return True
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        warnings.warn(
            f"TensorFlow already started with (intra_op, inter_op) = {current} threads; "
            f"could not switch to ({intra_op}, {inter_op}). Call "
            "tfhess_linop.configure_threads() before any TensorFlow operation runs.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def configure_threads_from_environment() -> None:
    """Apply the per-rank thread default when launched on several ranks."""
    setting = os.environ.get("TFHESS_LINOP_THREADS", "1").strip().lower()
    if launcher_size() <= 1 or setting == "default":
        return
    threads = int(setting) if setting.isdigit() else 1
    configure_threads(threads, 1)
