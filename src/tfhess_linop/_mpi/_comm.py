"""Communicators: checking one, its size and rank, and the launcher's rank count.

The only place that imports :mod:`mpi4py`, lazily (:func:`import_mpi`): the
package works without it, and ``comm=None`` always means "one process".
"""

from __future__ import annotations

import os

__all__ = ["import_mpi", "launcher_size", "rank", "resolve_comm", "size", "world"]

# Environment variables through which common launchers announce the number of
# ranks, read before mpi4py (and MPI_Init) is ever imported.
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


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


def import_mpi():
    """The ``mpi4py.MPI`` module, imported (and MPI initialised) on first use."""
    from mpi4py import MPI

    return MPI


def world():
    """``MPI.COMM_WORLD``, importing mpi4py (and initialising MPI) on first use."""
    return import_mpi().COMM_WORLD


def launcher_size() -> int:
    """Number of ranks announced by the MPI launcher's environment (1 if none)."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1
