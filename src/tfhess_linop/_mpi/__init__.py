"""Everything that touches MPI.

The rest of the package reaches MPI only through this package's names
(``_mpi.collective_sum``, ``_mpi.draw``, ...); :mod:`mpi4py` is imported
lazily, in :mod:`._comm` only: the package works without it, and
``comm=None`` always means "one process".

The rules it enforces (see the design notes):

- Hot-path reductions are one in-place, buffer-based ``Allreduce`` on a
  contiguous float64 array, never pickled lower-case collectives
  (:mod:`._reductions`).
- Random draws are made on every rank (so identically seeded generators stay
  in step) and then overwritten by rank 0's draw, so ranks never diverge
  (:mod:`._draws`).
- No rank is left waiting, whatever happens on another one: the status
  exchanges of :mod:`._agreement`, made per product by
  :func:`collective_sum` and on entering and leaving each public call by
  :func:`collective_call` (:mod:`._calls`).

TensorFlow's per-rank thread pools are set in :mod:`._threads`.
"""

from ._agreement import CollectiveError
from ._calls import collective_call
from ._comm import launcher_size, rank, resolve_comm, size, world
from ._draws import draw
from ._reductions import agree, allgather_object, broadcast_array, collective_sum
from ._threads import configure_threads, configure_threads_from_environment

__all__ = [
    "CollectiveError",
    "agree",
    "allgather_object",
    "broadcast_array",
    "collective_call",
    "collective_sum",
    "configure_threads",
    "configure_threads_from_environment",
    "draw",
    "launcher_size",
    "rank",
    "resolve_comm",
    "size",
    "world",
]
