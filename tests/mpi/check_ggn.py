"""Run under ``mpiexec -n P``: the GGN, empirical Fisher and MC Fisher are collective.

Every rank builds each operator on its shard of the data of
``tests/test_ggn.py`` (uneven shards, batches of 5, sample weights); rank 0
also builds it on all the data serially. Checked: the distributed dense matrices equal the
serial ones and are bit-identical on every rank, and ``eigsh`` of the
distributed GGN agrees on every rank. Rank 0 writes a JSON report to
``sys.argv[1]`` (failed comparisons are listed in it, not raised, so that no
rank waits alone).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
from mpi4py import MPI

import tfhess_linop as thl
from test_ggn import _data, _model

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
report = {"size": size, "checks": [], "failures": []}


def identical_on_all_ranks(name, value):
    values = comm.allgather(np.asarray(value, dtype=np.float64).tobytes())
    if all(v == values[0] for v in values):
        report["checks"].append(f"{name} identical on all ranks")
    else:
        report["failures"].append(f"rank {rank}: {name} differs between ranks")


x, labels, _, rng = _data(6)
weights = rng.uniform(0.5, 2.0, len(labels))
model, _ = _model(None, seed=6)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
for name, cls, options in (
    ("GGN", thl.GGN, {}),
    ("EmpiricalFisher", thl.EmpiricalFisher, {}),
    ("Fisher mc", thl.Fisher, {"mc_samples": 2}),
):
    serial = None
    if rank == 0:
        serial = cls.from_keras(model, loss, x, labels, sample_weight=weights, **options).dense()
    serial = comm.bcast(serial, root=0)
    operator = cls.from_keras(
        model, loss, x, labels, sample_weight=weights, batch_size=5, comm=comm, **options
    )
    dense = operator.dense()
    if np.allclose(dense, serial, rtol=1e-10, atol=1e-12 * np.abs(serial).max()):
        report["checks"].append(f"{name}: as serial")
    else:
        report["failures"].append(f"rank {rank}: {name} differs from serial")
    identical_on_all_ranks(name, dense)
    if name == "GGN":
        values = thl.eigsh(thl.as_linop(operator), k=2, which="LA", return_eigenvectors=False)
        identical_on_all_ranks("GGN eigsh", values)

failures = comm.gather(report["failures"], root=0)
if rank == 0:
    report["failures"] = sorted({f for rank_failures in failures for f in rank_failures})
    Path(sys.argv[1]).write_text(json.dumps(report, indent=2))
