"""Matvec timing on one process or on several MPI ranks; rank 0 prints one JSON line.

    python benchmarks/mpi_worker.py [--samples N] [--repeats R]          # 1 process
    mpiexec -n 2 python benchmarks/mpi_worker.py --mpi [--samples N] ...  # 2 ranks

Every rank builds the same model and the full data from fixed seeds, and
``Hessian.from_keras(..., comm=MPI.COMM_WORLD)`` keeps each rank's shard.
The communicator is wrapped so that the time spent inside ``Allreduce``
(the only collective in a matvec) is accumulated; it includes waiting for
the slower rank. A bare ``Allreduce`` of a buffer of the same size, after a
barrier, is timed separately: that is the cost of the communication alone.

The package sets one TensorFlow thread per rank when it is imported under a
launcher with more than one rank (``TFHESS_LINOP_THREADS`` controls it), so
the threads are recorded as found.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cases


class TimedComm:
    """An mpi4py communicator whose ``Allreduce`` calls are timed."""

    def __init__(self, comm):
        self._comm = comm
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0

    def Allreduce(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._comm.Allreduce(*args, **kwargs)
        finally:
            self.allreduce_seconds += time.perf_counter() - start
            self.allreduce_calls += 1

    def __getattr__(self, name):
        return getattr(self._comm, name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpi", action="store_true", help="use MPI.COMM_WORLD")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import tfhess_linop as thl

    comm = raw = None
    rank, size = 0, 1
    if args.mpi:
        from mpi4py import MPI

        raw = MPI.COMM_WORLD
        comm = TimedComm(raw)
        rank, size = raw.Get_rank(), raw.Get_size()
    case = cases.CASES["mpi_mlp"]
    if args.samples:
        case = cases.with_samples(case, args.samples)
    model, loss, x, y = cases.build(case)
    H = thl.Hessian.from_keras(model, loss, x, y, comm=comm)
    A = thl.as_linop(H)
    v = np.random.default_rng(1).standard_normal(H.n)

    def barrier():
        if raw is not None:
            raw.Barrier()

    for _ in range(2):
        A.matvec(v)
        H.gradient()
    matvec, gradient, inside = [], [], []
    for _ in range(args.repeats):
        barrier()
        spent = comm.allreduce_seconds if comm else 0.0
        start = time.perf_counter()
        A.matvec(v)
        matvec.append(time.perf_counter() - start)
        inside.append((comm.allreduce_seconds - spent) if comm else 0.0)
        barrier()
        start = time.perf_counter()
        H.gradient()
        gradient.append(time.perf_counter() - start)
    bare = []
    if raw is not None:
        from mpi4py import MPI

        buffer = np.zeros(H.n + 1)
        for _ in range(args.repeats + 2):
            raw.Barrier()
            start = time.perf_counter()
            raw.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            bare.append(time.perf_counter() - start)
        bare = bare[2:]
    record = {
        "ranks": size,
        "rank": rank,
        "n": H.n,
        "samples": case.samples,
        "local_samples": len(x) if size == 1 else None,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "TFHESS_LINOP_THREADS": os.environ.get("TFHESS_LINOP_THREADS"),
        "matvec_s": statistics.median(matvec),
        "gradient_s": statistics.median(gradient),
        "allreduce_in_matvec_s": statistics.median(inside),
        "bare_allreduce_s": statistics.median(bare) if bare else 0.0,
        "matvec_samples_s": matvec,
    }
    records = raw.gather(record, root=0) if raw is not None else [record]
    if rank == 0:
        head = dict(records[0])
        head["allreduce_in_matvec_max_s"] = max(r["allreduce_in_matvec_s"] for r in records)
        head["allreduce_in_matvec_min_s"] = min(r["allreduce_in_matvec_s"] for r in records)
        print(json.dumps(head), flush=True)


if __name__ == "__main__":
    main()
