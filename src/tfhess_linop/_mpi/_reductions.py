"""Collective reductions: the checked product sum, and the small agreements and gathers.

:func:`collective_sum` is the hot path (one in-place, buffer-based
``Allreduce`` on a contiguous float64 array, never pickled lower-case
collectives), wrapped in the status exchange of :mod:`._agreement`; the
others are used at construction time and by the random draws.
"""

from __future__ import annotations

import numpy as np

from ._agreement import (
    CALLS,
    OK,
    HeldInterrupts,
    check_status,
    exchange,
    product_signature,
    raise_together,
    start_status,
)
from ._comm import import_mpi

__all__ = ["agree", "allgather_object", "broadcast_array", "collective_sum"]


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
    description, signature = product_signature(CALLS.get(), tuple(shape))
    buffer = np.zeros(int(np.prod(shape, dtype=np.int64)) + 1)
    error = status = None
    # SIGINT is held from the start of the status exchange to the end of the
    # sum, except while this rank computes: one landing after `compute`
    # returned and before the sum began would take this rank out of the
    # exchange that the others have entered (seen: a hang of every rank, when
    # products at a fixed point took ~0.1 ms and the gap was a few us).
    with HeldInterrupts() as held:
        try:
            # The exchange runs while this rank computes, so that its latency
            # is hidden.
            status = start_status(comm, OK, signature)
            with held.released():
                values = compute()
            buffer[:-1] = np.asarray(values, dtype=np.float64).reshape(-1)
        except BaseException as exc:  # re-raised below, on every rank
            error = exc
            buffer[-1] = 1.0
        with exchange(comm):
            if status is None:
                raise error
            check_status(comm, status, description, error)
            # The shapes agree: the error flag rides in the sum's last slot.
            comm.Allreduce(import_mpi().IN_PLACE, buffer, op=import_mpi().SUM)
            if buffer[-1] != 0.0:
                raise_together(comm, description, error)
    return buffer[:-1].reshape(shape)


def agree(ok: bool, message: str, comm, exc_type=ValueError):
    """Raise `exc_type` on every rank unless `ok` holds on every rank.

    Collective over `comm`. Used for construction-time checks.
    """
    if comm is not None:
        ok = bool(comm.allreduce(int(bool(ok)), op=import_mpi().MIN))
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
