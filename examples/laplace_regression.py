"""Laplace uncertainty from the GGN: diagonal and low-rank posteriors
==================================================================

Predictive variance of a small Keras regression network from the
generalized Gauss-Newton matrix: the full, the diagonal and the low-rank
(top eigenpairs) Laplace approximations.

The linearised Laplace approximation puts a Gaussian on the weights around
the trained ones, :math:`\\theta \\sim \\mathcal N(\\hat\\theta, P^{-1})`, with
precision :math:`P = \\frac{1}{\\sigma^2} \\sum_i J_i^\\top J_i + \\alpha I`
(Gaussian likelihood of noise :math:`\\sigma^2`, prior precision
:math:`\\alpha`). For mean squared error the GGN of the training objective
is :math:`G = \\frac2N \\sum_i J_i^\\top J_i`, so :math:`P = \\frac{N}{2\\sigma^2}
G + \\alpha I`. The predictive variance at a new input is
:math:`\\sigma^2 + J_* P^{-1} J_*^\\top`.

`tfhess_linop.GGN` gives G as an operator: its exact diagonal
(`exact_diagonal`, n products) gives the diagonal posterior, its top
eigenpairs (`eigsh`) the low-rank one. The network is trained by Newton-CG
on the GGN (``curvature="ggn"``). The script checks the GGN against
:math:`\\frac2N J^\\top J` from ``tape.jacobian``, and that the low-rank
variance converges to the full one; the figure
``<out>/laplace_regression.png`` shows the three variance bands around the
mean: wide in the gap between the two clusters of data and beyond them.

Run: ``python examples/laplace_regression.py [--out DIR]``.
"""

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import tfhess_linop as thl

F64 = "float64"

# %%
# Data: two clusters of noisy samples of a sine, with a gap between them.

parser = argparse.ArgumentParser(description="Laplace uncertainty from the GGN")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)

rng = np.random.default_rng(args.seed)
N = 80
x = np.concatenate([rng.uniform(-3, -1, N // 2), rng.uniform(1, 3, N // 2)])[:, None]
y = np.sin(2 * x) + 0.1 * rng.standard_normal((N, 1))

keras.utils.set_random_seed(args.seed)
model = keras.Sequential(
    [
        keras.Input((1,)),
        keras.layers.Dense(8, activation="tanh", dtype=F64),
        keras.layers.Dense(8, activation="tanh", dtype=F64),
        keras.layers.Dense(1, dtype=F64),
    ]
)
model.compile(loss="mse")

# %%
# Training: Hessian-free Newton steps on the GGN (positive semi-definite, so
# with damping every CG solve is a descent direction).

history = thl.NewtonCG.from_keras(
    model, None, x, y, curvature="ggn", damping=1e-4, max_cg_iter=50
).minimize(steps=40, gtol=1e-8)
print(
    f"{model.count_params()} weights; training loss {history.losses[0]:.4f} -> "
    f"{history.loss:.5f} in {len(history)} Newton steps, {history.n_hvp} GGN products"
)

# %%
# The GGN at the trained weights, against the dense :math:`\frac2N J^T J`.

G = thl.GGN.from_keras(model, None, x, y)
A = thl.as_linop(G)


def jacobian(inputs):
    """(samples, n): the Jacobian of the network's output, one row per input."""
    with tf.GradientTape() as tape:
        output = model(inputs)[:, 0]
    pieces = tape.jacobian(output, model.trainable_variables)
    return np.concatenate([np.reshape(p.numpy(), (len(inputs), -1)) for p in pieces], axis=1)


J = jacobian(x)
dense = A.toarray()
assert np.allclose(dense, 2 * J.T @ J / N, rtol=1e-10, atol=1e-12 * np.abs(dense).max())

residual = model.predict(x, verbose=0) - y
sigma2 = float(np.mean(residual**2))
alpha = 1.0
scale = N / (2 * sigma2)
print(f"noise variance {sigma2:.4f}, prior precision {alpha}, n = {G.n}")

# %%
# Three posteriors: full (dense), diagonal (exact diagonal of G) and low-rank
# (the top k eigenpairs of G, and the prior alone on their complement).

x_test = np.linspace(-5, 5, 121)[:, None]
J_test = jacobian(x_test)
mean = model.predict(x_test, verbose=0)[:, 0]

full_precision = scale * dense + alpha * np.eye(G.n)
variance_full = sigma2 + np.einsum("ij,ji->i", J_test, np.linalg.solve(full_precision, J_test.T))

diagonal = thl.exact_diagonal(A)
variance_diagonal = sigma2 + (J_test**2 / (scale * diagonal + alpha)).sum(1)


def low_rank_variance(k):
    values, vectors = thl.eigsh(A, k=k, which="LA")
    projected = J_test @ vectors
    inside = (projected**2 / (scale * values + alpha)).sum(1)
    outside = ((J_test**2).sum(1) - (projected**2).sum(1)) / alpha
    return sigma2 + inside + outside


ranks = [2, 5, 10, 30]
low_rank = {k: low_rank_variance(k) for k in ranks}
errors = [np.abs(low_rank[k] - variance_full).max() / variance_full.max() for k in ranks]
for k, error in zip(ranks, errors, strict=True):
    print(f"low rank k = {k:2d}: largest variance error {error:.2e} (relative)")
assert errors[-1] < errors[0] and errors[-1] < 0.05
gap, data = np.abs(x_test[:, 0]) < 0.5, (np.abs(x_test[:, 0]) > 1.2) & (np.abs(x_test[:, 0]) < 2.8)
assert variance_full[gap].mean() > 2 * variance_full[data].mean()

# %%
# The predictive mean with two standard deviations of each posterior.

figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
bands = (
    ("full Laplace (dense GGN)", variance_full),
    ("diagonal Laplace", variance_diagonal),
    (f"low-rank Laplace (k = {ranks[-2]})", low_rank[ranks[-2]]),
)
for axis, (title, variance) in zip(axes, bands, strict=True):
    spread = 2 * np.sqrt(variance)
    axis.fill_between(x_test[:, 0], mean - spread, mean + spread, alpha=0.3, label="±2 std")
    axis.plot(x_test[:, 0], mean, color="C0", label="mean")
    axis.plot(x_test[:, 0], np.sin(2 * x_test[:, 0]), "k--", lw=0.8, label="sin(2x)")
    axis.scatter(x[:, 0], y[:, 0], s=8, color="C3", label="data")
    axis.set_title(title)
    axis.set_xlabel("x")
    axis.set_ylim(-3, 3)
axes[0].legend(loc="lower left", fontsize=8)
figure.tight_layout()
figure.savefig(out / "laplace_regression.png", dpi=110)
