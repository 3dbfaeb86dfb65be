"""Extreme eigenvalues with the data split over MPI ranks
======================================================

Extreme Hessian eigenvalues with the data split over MPI ranks.

Run: ``mpiexec -n 2 python examples/mpi_spectrum.py [--out DIR]`` (any number
of ranks, including 1 without ``mpiexec``).

Every rank builds the same model (same seed) and holds the same full data;
`tfhess_linop.Hessian.from_keras` with ``comm=MPI.COMM_WORLD`` keeps each
rank's ``numpy.array_split`` shard, and every Hessian-vector product sums the
shards' contributions with one ``Allreduce``. SciPy's Lanczos (`eigsh`)
then runs on every rank in step (SPMD). The script checks that

- every rank got bit-identical eigenvalues, gradient and trace estimate;
- they equal the serial answer, computed on each rank from all the data
  without a communicator, to rounding (the sum over shards is the same mean
  in another order);
- they equal :func:`numpy.linalg.eigvalsh` of the dense Hessian.

Rank 0 prints the results and writes ``<out>/mpi_spectrum.png``.
"""

import argparse
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mpi4py import MPI

import tfhess_linop as thl

QUICK = os.environ.get("CI", "").lower() == "true"


def make_problem(seed):
    """The same classifier and data on every rank."""
    classes, features, hidden, samples = (3, 6, 12, 151) if QUICK else (4, 12, 32, 2001)
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, features))
    y = rng.integers(classes, size=samples)
    x = centres[y] + rng.standard_normal((samples, features))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((features,), dtype="float64"),
            keras.layers.Dense(hidden, activation="tanh", dtype="float64"),
            keras.layers.Dense(classes, dtype="float64"),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.fit(x, y, epochs=3, batch_size=50, verbose=0)
    return model, loss, x, y


def spectrum(H, k, seed):
    """Extreme eigenvalues, gradient and a Hutch++ trace estimate; products and time."""
    A = thl.as_linop(H)
    start = time.perf_counter()
    largest = np.sort(thl.eigsh(A, k=k, which="LA", tol=1e-8, return_eigenvectors=False))[::-1]
    smallest = np.sort(thl.eigsh(A, k=k, which="SA", tol=1e-8, return_eigenvectors=False))
    trace = thl.hutchpp_trace(A, 12 if QUICK else 60, rng=seed).estimate
    return {
        "largest": largest,
        "smallest": smallest,
        "trace": trace,
        "gradient": H.gradient(),
        "hvp": A.n_hvp,
        "seconds": time.perf_counter() - start,
    }


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(
    description="Extreme eigenvalues with the data split over MPI ranks"
)
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out = pathlib.Path(args.out)
if rank == 0:
    out.mkdir(parents=True, exist_ok=True)

# %%
# The same model and data on every rank; each rank keeps its shard.
model, loss, x, y = make_problem(args.seed)
k = 3
distributed = thl.Hessian.from_keras(model, loss, x, y, batch_size=64, comm=comm)
parallel = spectrum(distributed, k, args.seed)
serial_hessian = thl.Hessian.from_keras(model, loss, x, y)
serial = spectrum(serial_hessian, k, args.seed)
eigenvalues = np.linalg.eigvalsh(serial_hessian.dense())

# %%
# Every rank has exactly the same numbers.
keys = ("largest", "smallest", "trace", "gradient")
everyone = comm.allgather({key: parallel[key] for key in keys})
for other in everyone:
    for key in keys:
        assert np.array_equal(other[key], parallel[key]), f"ranks differ in {key}"
# They are the serial answer, and the dense one.
scale = np.abs(eigenvalues).max()
for key in ("largest", "smallest"):
    np.testing.assert_allclose(parallel[key], serial[key], rtol=0, atol=1e-10 * scale)
np.testing.assert_allclose(parallel["trace"], serial["trace"], rtol=1e-9)
np.testing.assert_allclose(
    parallel["gradient"],
    serial["gradient"],
    rtol=0,
    atol=1e-12 * np.abs(serial["gradient"]).max(),
)
np.testing.assert_allclose(parallel["largest"], eigenvalues[::-1][:k], atol=1e-8 * scale)
np.testing.assert_allclose(parallel["smallest"], eigenvalues[:k], atol=1e-8 * scale)
shards = [len(shard) for shard in np.array_split(np.arange(len(x)), size)]

# %%
# Rank 0 reports and draws.
if rank == 0:
    print(
        f"{size} rank(s); {distributed.n} parameters; {distributed.n_samples} samples "
        f"in shards of {shards}"
    )
    print(f"largest  {np.array2string(parallel['largest'], precision=8)}")
    print(f"smallest {np.array2string(parallel['smallest'], precision=8)}")
    print(f"Hutch++ trace {parallel['trace']:.8g} (exact {eigenvalues.sum():.8g})")
    print(
        f"{parallel['hvp']} Hessian-vector products in {parallel['seconds']:.2f} s "
        f"(first call included: tracing) on {size} rank(s)"
    )
    difference = max(
        np.abs(parallel["largest"] - eigenvalues[::-1][:k]).max(),
        np.abs(parallel["smallest"] - eigenvalues[:k]).max(),
    )
    print(
        "every rank got bit-identical results, equal to the serial run and to "
        f"numpy.linalg.eigvalsh (max difference {difference:.1e})"
    )
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        range(1, distributed.n + 1),
        eigenvalues,
        ".",
        color="0.6",
        label="numpy.linalg.eigvalsh (dense, serial)",
    )
    n = distributed.n
    ax.plot(
        range(1, k + 1),
        parallel["smallest"],
        "x",
        color="C3",
        markersize=9,
        label=f"eigsh on {size} rank(s), smallest",
    )
    ax.plot(
        range(n - k + 1, n + 1),
        parallel["largest"][::-1],
        "x",
        color="C0",
        markersize=9,
        label=f"eigsh on {size} rank(s), largest",
    )
    ax.axhline(0.0, color="0.8", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue (symmetric log scale)")
    ax.set_title(f"Hessian spectrum, data split over {size} MPI rank(s): shards {shards}")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "mpi_spectrum.png", dpi=110)
