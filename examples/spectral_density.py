"""Spectral density and trace of a network's Hessian
=================================================

Spectral density and trace of a neural network's Hessian, checked against dense.

A small Keras classifier is trained for a few epochs on synthetic clustered
data; its Hessian (about 1000 parameters, or about 300 with ``CI=true``) is
small enough to form densely, so every estimate is checked against
``numpy.linalg.eigvalsh`` of the dense Hessian:

- stochastic Lanczos quadrature (`tfhess_linop.spectral_density`): extreme
  eigenvalues, the first moments of the spectrum, and the batched Lanczos
  (one HVP block per step) timed against the same runs made one probe at a
  time;
- the trace estimators (Hutchinson, Hutch++, XTrace): relative error against
  the number of Hessian-vector products.

The figure (``<out>/spectral_density.png``) shows the SLQ density on a log
scale next to the exact eigenvalue density smoothed the same way, and the
trace errors.

Run: ``python examples/spectral_density.py [--out DIR]``.
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

import tfhess_linop as thl

QUICK = os.environ.get("CI", "").lower() == "true"


def make_problem(seed):
    """A trained MLP classifier and its data: (model, x, y)."""
    num_classes, features, hidden, samples = (4, 8, 24, 200) if QUICK else (8, 16, 48, 800)
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((num_classes, features))
    y = rng.integers(num_classes, size=samples)
    x = centres[y] + rng.standard_normal((samples, features))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((features,), dtype="float64"),
            keras.layers.Dense(hidden, activation="tanh", dtype="float64"),
            keras.layers.Dense(num_classes, dtype="float64"),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.fit(x, y, epochs=5 if QUICK else 10, batch_size=50, verbose=0)
    return model, loss, x, y


def trace_errors(A, truth, budgets, repeats):
    """Relative RMS error of each trace estimator for each budget of products."""
    errors = {}
    for estimator in (thl.hutchinson_trace, thl.hutchpp_trace, thl.xtrace):
        errors[estimator.__name__] = [
            np.sqrt(
                np.mean([(estimator(A, m, rng=seed)[0] - truth) ** 2 for seed in range(repeats)])
            )
            / abs(truth)
            for m in budgets
        ]
    return errors


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(description="Spectral density and trace of a network's Hessian")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %%
# A small classifier, trained for a few epochs, and its dense Hessian as the
# reference.
model, loss, x, y = make_problem(args.seed)
H = thl.Hessian.from_keras(model, loss, x, y)
A = thl.as_linop(H)
dense = H.dense()
eigenvalues = np.linalg.eigvalsh(dense)
n = H.n
print(
    f"Hessian of a {n}-parameter MLP; eigenvalues in "
    f"[{eigenvalues[0]:.4g}, {eigenvalues[-1]:.4g}], trace {np.trace(dense):.6g}"
)

# %%
# Stochastic Lanczos quadrature: all probes advance together.
num_probes, num_steps = (6, 40) if QUICK else (10, 80)
# Trace both product paths (a block of probes, one probe) first, so that the
# timings below compare products, not TensorFlow's tracing.
thl.spectral_density(A, num_probes, 2, rng=args.seed)
thl.spectral_density(A, 1, 2, rng=args.seed)
A.n_hvp = 0
start = time.perf_counter()
result = thl.spectral_density(A, num_probes, num_steps, rng=args.seed)
batched_seconds = time.perf_counter() - start
assert A.n_hvp == result.num_matvecs == num_probes * num_steps
print(result)

# The same Lanczos runs one probe at a time: identical start vectors, so
# identical quadratures, but num_probes times as many HVP calls.
start = time.perf_counter()
singles = [thl.spectral_density(A, 1, num_steps, rng=args.seed) for _ in range(num_probes)]
single_seconds = time.perf_counter() - start
assert all(s.num_matvecs == num_steps for s in singles)
print(
    f"SLQ, {num_probes} probes x {num_steps} steps: batched {batched_seconds:.2f} s, "
    f"one probe at a time {single_seconds:.2f} s "
    f"(speed-up {single_seconds / batched_seconds:.1f}x)"
)

# %%
# Extreme eigenvalues and moments of the spectrum against the exact ones.
width = eigenvalues[-1] - eigenvalues[0]
print(f"largest eigenvalue  {eigenvalues[-1]:.10g}  SLQ {result.ritz_max:.10g}")
print(f"smallest eigenvalue {eigenvalues[0]:.10g}  SLQ {result.ritz_min:.10g}")
assert abs(result.ritz_max - eigenvalues[-1]) < 1e-8 * width
assert abs(result.ritz_min - eigenvalues[0]) < 0.02 * width
for order in (1, 2):
    exact = np.mean(eigenvalues**order)
    # Hutchinson with normalised random-sign probes: standard deviation of
    # one probe's q^T A^k q is sqrt(2 (||A^k||_F^2 - sum diag(A^k)^2)) / n.
    power = np.linalg.matrix_power(dense, order)
    deviation = np.sqrt(2 * (np.sum(power**2) - np.sum(np.diag(power) ** 2))) / n
    estimate = result.moment(order)
    print(
        f"moment {order}: exact {exact:.6g}, SLQ {estimate:.6g} "
        f"({abs(estimate - exact) / (deviation / np.sqrt(num_probes)):.1f} std)"
    )
    assert abs(estimate - exact) < 4 * deviation / np.sqrt(num_probes)

# %%
# Trace estimators on the Hessian-vector products of the model itself.
truth = np.trace(dense)
for estimator in (thl.hutchinson_trace, thl.hutchpp_trace, thl.xtrace):
    A.n_hvp = 0
    estimate, standard_error = estimator(A, 64, rng=args.seed)
    assert A.n_hvp == 64
    print(
        f"{estimator.__name__:>16}(A, 64): {estimate:.6g} +- {standard_error:.2g} "
        f"(exact {truth:.6g}, error {abs(estimate - truth) / standard_error:.1f} "
        "standard errors)"
    )
    assert abs(estimate - truth) < 4 * standard_error

# Error against the number of products, over many seeds: the estimators
# only multiply by blocks of vectors, so the dense Hessian stands in for
# the (slower) HVPs here.
budgets = [8, 16, 32, 64, 128] if QUICK else [8, 16, 32, 64, 128, 256]
repeats = 50
errors = trace_errors(dense, truth, budgets, repeats)
print(f"relative RMS trace error over {repeats} seeds")
print("  HVPs  " + "  ".join(f"{name:>16}" for name in errors))
for i, m in enumerate(budgets):
    print(f"  {m:4d}  " + "  ".join(f"{errors[name][i]:16.2e}" for name in errors))
# With enough products the low-rank part pays off (for few, random signs
# exploit the Hessian's strong diagonal better).
for name in ("hutchpp_trace", "xtrace"):
    assert errors[name][-1] < errors["hutchinson_trace"][-1]

# %%
# The density against the exact eigenvalues smoothed the same way, and the trace
# errors against the number of products.
figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(3, 2))
thl.plot_spectral_density(result, left)
kernel = np.exp(-0.5 * ((result.grid[:, None] - eigenvalues) / result.sigma) ** 2)
exact_density = kernel.mean(axis=1) / (result.sigma * np.sqrt(2 * np.pi))
left.plot(
    result.grid,
    np.maximum(exact_density, left.get_ylim()[0] / 10),
    color="C1",
    linestyle=":",
    linewidth=2,
    label="exact eigenvalues, same smoothing",
)
left.legend(loc="lower center")
for name, label in (
    ("hutchinson_trace", "Hutchinson"),
    ("hutchpp_trace", "Hutch++"),
    ("xtrace", "XTrace"),
):
    right.loglog(budgets, errors[name], marker="o", label=label)
reference = errors["hutchinson_trace"][0] * np.sqrt(budgets[0] / np.array(budgets))
right.loglog(budgets, reference, color="gray", linestyle="--", label="∝ 1/√m")
right.set_xlabel("Hessian-vector products m")
right.set_ylabel("relative RMS error of the trace")
right.set_title(f"Trace estimators ({repeats} seeds each)")
right.legend()
figure.tight_layout()
path = out / "spectral_density.png"
figure.savefig(path, dpi=120)
