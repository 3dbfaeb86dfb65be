"""Run under ``mpiexec -n P``: any point, SciPy optimisers and inverses, collectively.

Every rank builds the distributed Hessian on its shard and, as the
reference, the serial one on the full data. Checked: ``set_parameters``
agrees over the ranks (and refuses different or invalid vectors on every
rank), ``minimize`` with several SciPy methods gives the serial answer and
bit-identical results on every rank, the bound Hessian, ``inverse`` and
shift-invert ``eigsh`` likewise. Rank 0 writes a JSON report to
``sys.argv[1]``; any failed check raises (non-zero exit).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import scipy.optimize
from mpi4py import MPI

import tfhess_linop as thl

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
report = {"size": size, "checks": []}


def check(name, ok):
    if not ok:
        raise AssertionError(f"rank {rank}: {name}")
    report["checks"].append(name)


def identical_on_all_ranks(name, value):
    values = comm.allgather(np.asarray(value, dtype=np.float64).tobytes())
    check(f"{name} identical on all ranks", all(v == values[0] for v in values))


def outcome(function):
    try:
        function()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def build(features, outputs, hidden=None):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((features,), dtype="float64")]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="tanh", dtype="float64"))
    layers.append(keras.layers.Dense(outputs, dtype="float64"))
    return keras.Sequential(layers)


data = np.random.default_rng(0)
N = 17  # shards of 9/8 on 2 ranks, 6/6/5 on 3
x = data.standard_normal((N, 4))
y = data.standard_normal((N, 2))

# A linear model: least squares, exactly solvable.
linear, linear_serial = build(4, 2), build(4, 2)
H = thl.Hessian.from_keras(linear, "mse", x, y, batch_size=4, comm=comm)
Hs = thl.Hessian.from_keras(linear_serial, "mse", x, y)
X1 = np.hstack([x, np.ones((N, 1))])
coefficients = np.linalg.lstsq(X1, y, rcond=None)[0]  # (5, 2): kernel rows, then bias
solution = np.concatenate([coefficients[:4].reshape(-1), coefficients[4]])

# parameters and set_parameters
start = H.parameters()
identical_on_all_ranks("parameters", start)
w = np.linspace(-1.0, 1.0, H.n)
H.set_parameters(w)
Hs.set_parameters(w)
check("set_parameters: loss as serial", np.isclose(H.loss_value(), Hs.loss_value(), rtol=1e-13))
different = outcome(lambda: H.set_parameters(w + rank))
check("different w on the ranks: ValueError on every rank", different.startswith("ValueError"))
check("... naming the problem", "differs between the ranks" in different)
nan_on_last = w.copy()
if rank == size - 1:
    nan_on_last[0] = np.nan
refused = outcome(lambda: H.set_parameters(nan_on_last))
expected = "ValueError: `w` must be finite" if rank == size - 1 else "CollectiveError"
check("NaN on one rank: every rank raises", refused.startswith(expected))
check("parameters unchanged after refusals", np.array_equal(H.parameters(), w))
with H.at(np.zeros(H.n)):
    check("at: moved", not np.any(H.parameters()))
check("at: restored", np.array_equal(H.parameters(), w))
check("healthy afterwards", outcome(H.loss_value) == "no error")

# minimize, with every kind of method
for method, options in [
    ("trust-krylov", {"gtol": 1e-12}),
    ("trust-ncg", {"gtol": 1e-12}),
    ("Newton-CG", {"xtol": 1e-14}),
    ("trust-exact", {"gtol": 1e-12}),
    ("BFGS", {"gtol": 1e-10}),
    ("L-BFGS-B", {"gtol": 1e-13, "ftol": 1e-16}),
]:
    H.set_parameters(start)
    res = thl.minimize(H, method=method, options=options)
    check(f"minimize {method}: success", res.success)
    check(f"minimize {method}: lstsq", np.allclose(res.x, solution, rtol=0, atol=1e-9))
    check(f"minimize {method}: model at res.x", np.array_equal(H.parameters(), res.x))
    identical_on_all_ranks(f"minimize {method}", res.x)

# trust-constr with the bound Hessian, through SciPy directly
objective = thl.ScipyObjective(H)
res = scipy.optimize.minimize(
    objective.fun,
    start,
    jac=objective.jac,
    hess=objective.hess,
    method="trust-constr",
    options={"gtol": 1e-13, "xtol": 1e-14},
)
check("trust-constr with hess=bound operator", np.allclose(res.x, solution, atol=1e-7))
identical_on_all_ranks("trust-constr", res.x)

# The bound Hessian of an MLP after evaluations elsewhere, against serial.
mlp, mlp_serial = build(4, 2, hidden=5), build(4, 2, hidden=5)
Hm = thl.Hessian.from_keras(mlp, "mse", x, y, batch_size=3, comm=comm)
Hms = thl.Hessian.from_keras(mlp_serial, "mse", x, y)
point = Hm.parameters() + 0.1
objective = thl.ScipyObjective(Hm)
bound = objective.hess(point)
objective.fun_and_jac(np.zeros(Hm.n))
with Hms.at(point):
    dense = Hms.dense()
probe = np.linspace(-1.0, 1.0, Hm.n)
product = bound @ probe
check("bound Hessian: as serial", np.allclose(product, dense @ probe, rtol=1e-12, atol=1e-14))
identical_on_all_ranks("bound Hessian", product)

# a short trust-krylov run on the MLP: the same trajectory on every rank
res = thl.minimize(Hm, method="trust-krylov", options={"maxiter": 15})
identical_on_all_ranks("minimize MLP trust-krylov", res.x)
check("MLP: model at res.x", np.array_equal(Hm.parameters(), res.x))

# inverse and shift-invert eigsh at res.x
A = thl.as_linop(Hm)
with Hms.at(res.x):
    exact = np.linalg.eigvalsh(Hms.dense())
damping = 1.0 + max(0.0, -exact.min())
g = np.linspace(1.0, 2.0, Hm.n)
damped = thl.inverse(A, -damping, method="cg", rtol=1e-12) @ g
with Hms.at(res.x):
    reference = np.linalg.solve(Hms.dense() + damping * np.eye(Hm.n), g)
check("damped inverse: numpy solve", np.allclose(damped, reference, rtol=1e-8, atol=1e-12))
identical_on_all_ranks("damped inverse", damped)
sigma = 0.5 * (exact[5] + exact[6])
values = np.sort(thl.eigsh(A, k=2, sigma=sigma, return_eigenvectors=False))
nearest = np.sort(exact[np.argsort(np.abs(exact - sigma))[:2]])
check("shift-invert eigsh: eigvalsh", np.allclose(values, nearest, rtol=0, atol=1e-9))
identical_on_all_ranks("shift-invert eigsh", values)

if rank == 0:
    with open(sys.argv[1], "w") as stream:
        json.dump(report, stream)
