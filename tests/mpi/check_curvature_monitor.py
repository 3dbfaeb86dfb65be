"""Run under ``mpiexec -n P``: `CurvatureMonitor` is collective and logs the serial values.

Every rank runs the same float64 fit (the model of
``tests/test_curvature_monitor.py``) with a monitor on 23 held-out
samples distributed over the ranks (``comm``, uneven shards, batches of 5);
rank 0 also runs a serial one on all the data. Checked: the distributed values
equal the serial ones, and the ranks log bit-identical values and end with
bit-identical weights. Rank 0 writes a JSON report to ``sys.argv[1]``
(failed comparisons are listed in it, not raised, so that no rank waits
alone).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from mpi4py import MPI

from test_curvature_monitor import BATCH, N_TRAIN, data, float64_model
from tfhess_linop.keras import CurvatureMonitor

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
report = {"size": size, "checks": [], "failures": []}


def identical_on_all_ranks(name, value):
    values = comm.allgather(np.asarray(value, dtype=np.float64).tobytes())
    if all(v == values[0] for v in values):
        report["checks"].append(f"{name} identical on all ranks")
    else:
        report["failures"].append(f"rank {rank}: {name} differs between ranks")


x, y = data(1, N_TRAIN)
xm, ym = data(2, 23)
options = dict(k=2, smallest=True, trace_matvecs=12, batch_size=5)
distributed = CurvatureMonitor(xm, ym, comm=comm, prefix="distributed", **options)
# The serial reference runs on rank 0 only (it is not collective), at the same weights.
serial = CurvatureMonitor(xm, ym, prefix="serial", **options)
model = float64_model()
history = model.fit(
    x,
    y,
    epochs=2,
    batch_size=BATCH,
    shuffle=False,
    verbose=0,
    callbacks=[distributed, serial] if rank == 0 else [distributed],
).history
reference = comm.bcast({k: v for k, v in history.items() if k.startswith("serial_")}, root=0)

for key in distributed.keys:
    name = key.removeprefix("distributed_")
    got, want = np.array(history[key]), np.array(reference[f"serial_{name}"])
    if np.allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max()):
        report["checks"].append(f"{name}: as serial")
    else:
        report["failures"].append(f"rank {rank}: {name} {got} != serial {want}")
    identical_on_all_ranks(name, got)
identical_on_all_ranks("products", [r["hvps"] for r in distributed.records])
identical_on_all_ranks("weights", np.concatenate([w.ravel() for w in model.get_weights()]))

failures = comm.gather(report["failures"], root=0)
if rank == 0:
    report["failures"] = sorted({f for rank_failures in failures for f in rank_failures})
    Path(sys.argv[1]).write_text(json.dumps(report, indent=2))
