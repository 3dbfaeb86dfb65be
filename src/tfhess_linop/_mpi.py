"""Everything that touches MPI.

This is the only module that imports :mod:`mpi4py`, and it does so lazily:
the package works without it, and ``comm=None`` always means "one process".

The rules it enforces (see the design notes):

- Hot-path reductions are one in-place, buffer-based ``Allreduce`` on a
  contiguous float64 array, never pickled lower-case collectives.
- An exception raised on one rank inside a collective call does not leave the
  other ranks waiting: each reduction buffer carries one extra slot, an error
  flag, so every rank learns of the failure from the same ``Allreduce`` and
  raises.
- Random draws are made on every rank (so identically seeded generators stay
  in step) and then overwritten by rank 0's draw, so ranks never diverge.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

__all__ = [
    "CollectiveError",
    "agree",
    "allgather_object",
    "broadcast_array",
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

    Collective over `comm`.

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
        On the ranks that did not fail, when any rank's `compute` raised; the
        failing ranks re-raise their own exception.
    """
    if comm is None:
        return np.asarray(compute(), dtype=np.float64).reshape(shape)
    buffer = np.zeros(int(np.prod(shape, dtype=np.int64)) + 1, dtype=np.float64)
    error = None
    try:
        buffer[:-1] = np.asarray(compute(), dtype=np.float64).reshape(-1)
    except Exception as exc:  # re-raised below, on every rank
        error = exc
        buffer[:-1] = 0.0
        buffer[-1] = 1.0
    comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
    if buffer[-1] != 0.0:
        _raise_everywhere(error, comm)
    return buffer[:-1].reshape(shape)


def _raise_everywhere(error, comm):
    """Raise on every rank once the ranks agreed that some rank failed."""
    messages = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None]
    raise CollectiveError("another rank failed in a collective call; " + "; ".join(failed))


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
    """
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
