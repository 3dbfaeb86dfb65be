"""Run under ``mpiexec -n P``: sharded data sources cover every sample once.

Column 0 of every input is the sample's index, so the union of what the
ranks iterate over shows which samples each rank holds. Rank 0 writes, as
JSON to ``sys.argv[1]``, every rank's sample indices and counts per case, and
the exception every rank saw in the failure cases.
"""

import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from mpi4py import MPI

from tfhess_linop._sources import DataSource

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
N = 23
X = np.column_stack([np.arange(N, dtype=np.float64), np.ones(N)])
Y = -np.arange(N, dtype=np.float64)[:, None]


class Batches(keras.utils.PyDataset):
    def __init__(self, parts, batch_size):
        super().__init__()
        self.parts, self.batch_size = parts, batch_size

    def __len__(self):
        return math.ceil(len(self.parts[0]) / self.batch_size)

    def __getitem__(self, i):
        return tuple(p[i * self.batch_size : (i + 1) * self.batch_size] for p in self.parts)


def indices(source):
    """This rank's sample indices, checking that `y` travelled with its `x`."""
    seen = []
    for x, y in source:
        assert np.array_equal(y.numpy()[:, 0], -x.numpy()[:, 0]), "x and y out of step"
        seen += x.numpy()[:, 0].astype(int).tolist()
    head = source.head(5)[0].numpy()[:, 0].astype(int).tolist()
    assert head == seen[:5], (head, seen[:5])
    return seen


def from_slices(*parts):
    return tf.data.Dataset.from_tensor_slices(parts)


# With 23 samples in batches of 7 there are 4 batches (uneven over 3 ranks);
# one batch of 23 leaves every rank but rank 0 without any.
cases = {
    "arrays": lambda: DataSource(X, Y, batch_size=4, comm=comm),
    "arrays, one batch": lambda: DataSource(X, Y, comm=comm),
    "Dataset batched": lambda: DataSource(from_slices(X, Y).batch(7), comm=comm),
    "Dataset unbatched": lambda: DataSource(
        from_slices(X, Y),
        batch_size=7,
        comm=comm,
        model=keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
    ),
    "Dataset, one batch": lambda: DataSource(from_slices(X, Y).batch(N), comm=comm),
    "PyDataset": lambda: DataSource(Batches((X, Y), 7), comm=comm),
    "PyDataset, one batch": lambda: DataSource(Batches((X, Y), N), comm=comm),
    "Dataset shuffled with a seed": lambda: DataSource(
        from_slices(X, Y).shuffle(N, seed=1, reshuffle_each_iteration=False).batch(7), comm=comm
    ),
    "shard=False": lambda: DataSource(X[rank::size], Y[rank::size], comm=comm, shard=False),
}
report = {"size": size, "cases": {}, "failures": {}}
for name, make in cases.items():
    source = make()
    seen = indices(source)
    report["cases"][name] = comm.gather(
        {"indices": seen, "n_local": source.n_local, "n_global": source.n_global}, root=0
    )


def outcome(make):
    try:
        make()
    except Exception as exc:  # recorded, checked by the test
        return type(exc).__name__
    return "no error"


faulty = rank == size - 1
bad_x = X.copy()
bad_x[0, 1] = np.nan
failures = {
    "NaN in one rank's arrays": lambda: DataSource(
        bad_x if faulty else X, Y, comm=comm, shard=False
    ),
    "NaN in one rank's Dataset": lambda: DataSource(
        from_slices(bad_x if faulty else X, Y).batch(5), comm=comm, shard=False
    ),
    "dtypes differ between ranks": lambda: DataSource(
        X.astype(np.float32) if faulty else X, Y, comm=comm, shard=False
    ),
    "Dataset shuffled without a seed": lambda: DataSource(
        from_slices(X, Y).shuffle(N, reshuffle_each_iteration=False).batch(7), comm=comm
    ),
    "a generator on one rank": lambda: DataSource(
        (X for _ in range(1)) if faulty else X, Y, comm=comm
    ),
    "one rank without samples": lambda: DataSource(
        X[: 0 if faulty else N], Y[: 0 if faulty else N], comm=comm, shard=False
    ),
}
for name, make in failures.items():
    report["failures"][name] = comm.gather(outcome(make), root=0)

if rank == 0:
    with open(sys.argv[1], "w") as stream:
        json.dump(report, stream)
