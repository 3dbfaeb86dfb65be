"""Run under ``mpiexec -n P``: the distributed operator equals the serial one.

Every rank builds the serial Hessian on the full data (the reference) and
the distributed one on its shard, compares them, gathers its results on rank
0, and rank 0 checks that all ranks hold bit-identical arrays. Rank 0 writes
a JSON report to ``sys.argv[1]``; any failed check raises (non-zero exit).
"""

import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from mpi4py import MPI

import tfhess_linop as thl
from tfhess_linop import _fixed_point

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
report = {"size": size, "checks": []}


def close(name, got, want, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    report["checks"].append(name)


def identical_on_all_ranks(name, value):
    values = comm.gather(np.asarray(value), root=0)
    if rank == 0:
        for other in values[1:]:
            if other.shape != values[0].shape or other.tobytes() != values[0].tobytes():
                raise AssertionError(f"{name} differs between ranks")
        report["checks"].append(f"{name} identical on all ranks")


def build_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(5, activation="tanh", dtype="float64"),
            keras.layers.Dense(2, dtype="float64"),
        ]
    )


data = np.random.default_rng(0)
N = 17  # shards of 9/8 on 2 ranks, 6/6/5 on 3; batches of 3 leave uneven tails
x = data.standard_normal((N, 4))
y = data.standard_normal((N, 2))
model = build_model()

assert tf.config.threading.get_intra_op_parallelism_threads() == 1, "one thread per rank"
assert tf.config.threading.get_inter_op_parallelism_threads() == 1, "one thread per rank"
report["checks"].append("one TensorFlow thread per rank")

serial = thl.Hessian.from_keras(model, "mse", x, y, batch_size=3)
parallel = thl.Hessian.from_keras(model, "mse", x, y, batch_size=3, comm=comm)
lo, hi = np.array_split(np.arange(N), size)[rank][[0, -1]]
local = thl.Hessian.from_keras(
    model, "mse", x[lo : hi + 1], y[lo : hi + 1], batch_size=2, comm=comm, shard=False
)
assert parallel.n_samples == local.n_samples == N

probe = np.random.default_rng(1).standard_normal((serial.n, 4))
dense = serial.dense()
for name, H in (("shard=True", parallel), ("shard=False", local)):
    close(f"{name}: loss", H.loss_value(), serial.loss_value())
    close(f"{name}: gradient", H.gradient(), serial.gradient())
    close(f"{name}: hvp", H.hvp(probe[:, 0]), serial.hvp(probe[:, 0]))
    close(f"{name}: matmat", H.hvp(probe), serial.hvp(probe))
    grad, hv = H.action(probe[:, 1])
    close(f"{name}: action", np.concatenate([grad, hv]), np.concatenate(serial.action(probe[:, 1])))
    close(f"{name}: dense", H.dense(block_size=7), dense)
    identical_on_all_ranks(f"{name}: gradient", H.gradient())
    identical_on_all_ranks(f"{name}: matmat", H.hvp(probe))
    identical_on_all_ranks(f"{name}: dense", H.dense())

# Products at a fixed point: the same operator, kept passes per batch, and a
# point that moves in the middle of the block.
with parallel.fixed_point() as point:
    close("fixed point: hvp", parallel.hvp(probe[:, 0]), serial.hvp(probe[:, 0]))
    close("fixed point: matmat", parallel.hvp(probe), serial.hvp(probe))
    identical_on_all_ranks("fixed point: matmat", parallel.hvp(probe))
    # Written into `out` (here the request itself), on every rank.
    block = np.asfortranarray(probe)
    written = parallel.hvp(block, out=block)
    assert written is block
    close("fixed point: matmat into out", block, serial.hvp(probe))
    identical_on_all_ranks("fixed point: matmat into out", block)
    moved = parallel.parameters() * 0.9
    with parallel.at(moved), serial.at(moved):
        close("fixed point: moved", parallel.hvp(probe), serial.hvp(probe))
    assert point.active and point.starts == 2, (point.active, point.starts)
# A budget that only rank 0 cannot meet: every rank computes as outside the block.
with parallel.fixed_point(memory_budget=1 if rank == 0 else 2**40) as point:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", thl.PerformanceWarning)
        close("fixed point over budget on one rank", parallel.hvp(probe), serial.hvp(probe))
    identical_on_all_ranks("fixed point over budget: active", point.active)
    assert point.active is False

# Products outside a block keep the passes of their point (`keep_passes`):
# the products from scratch, an assignment on every rank seen, and a kept
# budget that only rank 0 cannot meet taken by no rank.
scratch = thl.Hessian.from_keras(model, "mse", x, y, batch_size=3, comm=comm)
scratch.keep_passes = False
kept = thl.Hessian.from_keras(model, "mse", x, y, batch_size=3, comm=comm)
close("kept passes: hvp", kept.hvp(probe[:, 0]), scratch.hvp(probe[:, 0]))
close("kept passes: matmat", kept.hvp(probe), scratch.hvp(probe))
identical_on_all_ranks("kept passes: matmat", kept.hvp(probe))
bias = model.layers[-1].bias
start = bias.numpy().copy()
bias.assign(start + 0.25)
close("kept passes: after an assignment", kept.hvp(probe), scratch.hvp(probe))
identical_on_all_ranks("kept passes: after an assignment", kept.hvp(probe))
bias.assign(start)
assert kept._kept.active and kept._kept.starts == 2, (kept._kept.active, kept._kept.starts)
budget = _fixed_point.kept_memory_budget
_fixed_point.kept_memory_budget = lambda: 1 if rank == 0 else 2**40
over = thl.Hessian.from_keras(model, "mse", x, y, batch_size=3, comm=comm)
close("kept passes over budget on one rank", over.hvp(probe), scratch.hvp(probe))
identical_on_all_ranks("kept passes over budget: active", over._kept.active)
assert over._kept.active is False
_fixed_point.kept_memory_budget = budget

# A plain loss returning this rank's contribution: the operator sums them.
w = tf.Variable(np.linspace(-1.0, 1.0, 6))
weights = np.arange(1.0, size + 1.0)


def contribution(w):
    return weights[rank] * tf.reduce_sum(tf.sin(w) * w**2)


custom = thl.Hessian(contribution, w, comm=comm)
expected = thl.Hessian(lambda w: weights.sum() * tf.reduce_sum(tf.sin(w) * w**2), w)
close("custom loss: dense", custom.dense(), expected.dense(), rtol=1e-13)

# Every algorithm returns the same answer on every rank, equal to the serial one.
A, A0 = thl.as_linop(parallel), thl.as_linop(serial)
top = np.linalg.eigvalsh(dense)[::-1]

values = thl.eigsh(A, k=3, which="LA", return_eigenvectors=False)
close("eigsh", np.sort(values)[::-1], top[:3], rtol=1e-8)
identical_on_all_ranks("eigsh", values)
# With tol > 0 the basis is kept semi-orthogonal (partial reorthogonalisation).
values, vectors = thl.eigsh(A, k=2, which="LA", tol=1e-6)
close("eigsh, tol=1e-6", np.sort(values)[::-1], top[:2], rtol=1e-6)
identical_on_all_ranks("eigsh, tol=1e-6", vectors)

values, vectors = thl.lobpcg(A, 2, tol=1e-9, maxiter=200, rng=5)
close("lobpcg", np.sort(values)[::-1], top[:2], rtol=1e-6)
identical_on_all_ranks("lobpcg", vectors)

value, vector, info = thl.power_iteration(A, which="LM", tol=1e-8, maxiter=2000)
close("power_iteration", abs(value), np.abs(top).max(), rtol=1e-6)
identical_on_all_ranks("power_iteration", vector)

U, s, Vt = thl.randomized_svd(A, 3, n_iter=4, method="krylov")
close("randomized_svd", s, np.sort(np.abs(top))[::-1][:3], rtol=1e-6)
identical_on_all_ranks("randomized_svd", U)

b = np.ones(serial.n)
result = thl.cg(A, b, rtol=1e-10, maxiter=200)
result0 = thl.cg(A0, b, rtol=1e-10, maxiter=200)
close("cg", result.x, result0.x, rtol=1e-8, atol=1e-10)
identical_on_all_ranks("cg", result.x)
identical_on_all_ranks("cg negative curvature", result.negative_curvature is not None)

# pcg: a Nystrom sketch (one blocked product, two Cholesky QRs), then CG.
result = thl.pcg(A, b, rank=3, oversample=2, rtol=1e-10, maxiter=200, rng=6)
result0 = thl.pcg(A0, b, rank=3, oversample=2, rtol=1e-10, maxiter=200, rng=6)
close("pcg", result.x, result0.x, rtol=1e-8, atol=1e-10)
identical_on_all_ranks("pcg", result.x)

trace, error = thl.hutchpp_trace(A, 30, rng=3)
close("hutchpp_trace", trace, np.trace(dense), rtol=0.5)
identical_on_all_ranks("hutchpp_trace", [trace, error])

# The estimators that reuse their blocks (XTrace and XDiag write A Q into
# the sketch, Hutchinson's estimators two blocks of 7 columns): the same
# estimates as on the dense matrix with the same probes, on every rank.
for name, estimate in [
    ("xtrace", lambda B: thl.xtrace(B, 30, rng=5)),
    ("xdiag", lambda B: thl.xdiag(B, 30, rng=5)),
    ("hutchinson_diagonal", lambda B: thl.hutchinson_diagonal(B, 30, rng=5, block_size=7)),
    ("hutchinson_trace", lambda B: thl.hutchinson_trace(B, 30, rng=5, block_size=7)),
]:
    got, want = estimate(A), estimate(dense)
    close(name, got[0], want[0], rtol=0, atol=1e-9 * np.abs(want[0]).max())
    identical_on_all_ranks(name, [got[0], got[1]])

density = thl.spectral_density(A, num_probes=4, num_steps=serial.n, rng=4)
close("spectral_density extremes", [density.ritz_min, density.ritz_max], top[[-1, 0]], rtol=1e-6)
identical_on_all_ranks("spectral_density", density.density)

if rank == 0:
    with open(sys.argv[1], "w") as stream:
        json.dump(report, stream)
