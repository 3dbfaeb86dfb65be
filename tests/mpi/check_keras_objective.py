"""Run under ``mpiexec -n P``: the Hessian of Keras' own objective equals the serial reference.

Three cases of ``tests/test_keras_objective.py`` on 11 samples (uneven
shards): a masked ``mean_with_sample_weight`` with per-timestep weights,
regularizers with ``loss_weights``, and named inputs and outputs with loss
dicts. Every rank builds the operator with ``shard=True`` from the full data
and with ``shard=False`` from its own ``numpy.array_split`` shard, both in
batches of 3, and compares it with the nested-GradientTape reference of
``model.compute_loss`` on all the data; rank 0 checks that the ranks hold
bit-identical arrays and writes a JSON report to ``sys.argv[1]`` (failed
comparisons are listed in it, not raised, so that no rank waits alone).
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
from test_keras_objective import N_SAMPLES, masked, named_dicts, reference, regularized

keras.config.set_floatx("float64")
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
report = {"size": size, "checks": [], "failures": []}


def close(name, got, want, rtol=1e-10, atol=1e-12):
    scale = max(float(np.abs(want).max()), np.finfo(float).tiny)
    try:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=name)
    except AssertionError as error:
        report["failures"].append(f"rank {rank}: {error}")
    else:
        report["checks"].append(name)


def identical_on_all_ranks(name, value):
    values = comm.gather(np.asarray(value), root=0)
    if rank == 0:
        for other in values[1:]:
            if other.shape != values[0].shape or other.tobytes() != values[0].tobytes():
                report["failures"].append(f"{name} differs between ranks")
                return
        report["checks"].append(f"{name} identical on all ranks")


def this_shard(data):
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: this_shard(value) for key, value in data.items()}
    if isinstance(data, list):
        return [this_shard(value) for value in data]
    return np.array_split(data, size)[rank]


CASES = {
    "masked mean with sample weights": lambda: masked(
        reduction="mean_with_sample_weight", weighted=True
    ),
    "regularizers and loss_weights": lambda: regularized(loss_weights=[3.0]),
    "named inputs and outputs": named_dicts,
}

for case, build in CASES.items():
    problem = build()
    ref = reference(problem)
    probe = np.random.default_rng(1).standard_normal((ref.hessian.shape[0], 3))
    for shard in (True, False):
        name = f"{case}, shard={shard}"
        x, y, sample_weight = problem.x, problem.y, problem.sample_weight
        if not shard:
            x, y, sample_weight = this_shard(x), this_shard(y), this_shard(sample_weight)
        try:
            H = thl.Hessian.from_keras(
                problem.model,
                x=x,
                y=y,
                sample_weight=sample_weight,
                batch_size=3,
                comm=comm,
                shard=shard,
            )
            dense, gradient, value, products = H.dense(), H.gradient(), H.loss_value(), H.hvp(probe)
        except Exception as error:  # the same error on every rank: report it, go on
            report["failures"].append(f"rank {rank}: {name}: {type(error).__name__}: {error}")
            continue
        if H.n_samples != N_SAMPLES:
            report["failures"].append(f"rank {rank}: {name}: n_samples {H.n_samples}")
        close(f"{name}: dense", dense, ref.hessian)
        close(f"{name}: gradient", gradient, ref.gradient)
        close(f"{name}: loss", value, ref.value)
        close(f"{name}: hvp", products, ref.hessian @ probe)
        identical_on_all_ranks(f"{name}: dense", dense)
        identical_on_all_ranks(f"{name}: gradient", gradient)
        identical_on_all_ranks(f"{name}: loss", value)
        identical_on_all_ranks(f"{name}: hvp", products)

failures = comm.gather(report["failures"], root=0)
if rank == 0:
    report["failures"] = sorted({failure for per_rank in failures for failure in per_rank})
    with open(sys.argv[1], "w") as stream:
        json.dump(report, stream)
