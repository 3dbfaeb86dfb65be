"""The Hessian of the XOR network
==============================

The Hessian of the seed's XOR network: heat map and eigenvalues, checked against dense.

The seed's network (2 inputs, a 2-unit softmax hidden layer, a linear
output; 9 parameters) and its mean squared error on the four XOR points,
after some SGD training as in the seed notebook. The script

- assembles the dense Hessian from batched Hessian-vector products and checks
  it against nested ``tf.GradientTape`` Jacobians
  (`tfhess_linop.dense_hessian_reference`), and the operator's symmetry
  and adjoint (`symmetry_test`, `dottest`);
- computes the extreme eigenvalues with Lanczos (`eigsh`), LOBPCG and power
  iteration, against :func:`numpy.linalg.eigvalsh`;
- checks that the analysis left the model's weights bit-identical.

The figure ``<out>/xor_hessian.png`` shows the Hessian as a heat map (the
seed's ``log10 |H|`` and a signed view) and its spectrum.

Run: ``python examples/xor_hessian.py [--out DIR]``.
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

QUICK = os.environ.get("CI", "").lower() == "true"

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def xor_model(seed):
    """The seed's architecture, in float64, trained by SGD as in the seed (full batch)."""
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(mean=0.0, stddev=0.05)
    model = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(2, activation="softmax", bias_initializer=init, dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    model.fit(X, Y, epochs=50 if QUICK else 200, batch_size=4, verbose=0)
    return model


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(description="The Hessian of the XOR network")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %%
# Train the seed's network with SGD, then build the Hessian of its MSE on the four
# points.
model = xor_model(args.seed)
before = [w.numpy().copy() for w in model.weights]
H = thl.Hessian.from_keras(model, "mse", X, Y)
A = thl.as_linop(H)
print(f"XOR network: {H.n} parameters, loss {H.loss_value():.6f}")

# %%
# The operator is symmetric and its own adjoint; assembled densely it equals the
# nested-tape reference.
thl.symmetry_test(A, rtol=1e-12, rng=args.seed)
thl.dottest(A, rtol=1e-12, rng=args.seed)
dense = H.dense()
x, y = tf.constant(X), tf.constant(Y)
reference = thl.dense_hessian_reference(
    lambda: tf.reduce_mean(tf.square(model(x) - y)), model.trainable_variables
)
np.testing.assert_allclose(dense, reference, rtol=1e-10, atol=1e-13)
print(f"dense Hessian = nested-tape reference to {np.abs(dense - reference).max():.1e}")

# %%
# Extreme eigenvalues by Lanczos, LOBPCG and power iteration against ``eigvalsh``;
# the analysis leaves the weights as they were.
eigenvalues = np.linalg.eigvalsh(dense)
scale = np.abs(eigenvalues).max()
top = thl.eigsh(A, k=2, which="LA", return_eigenvectors=False)
bottom = thl.eigsh(A, k=2, which="SA", return_eigenvectors=False)
np.testing.assert_allclose(np.sort(top), eigenvalues[-2:], atol=1e-10 * scale)
np.testing.assert_allclose(np.sort(bottom), eigenvalues[:2], atol=1e-10 * scale)
block, _ = thl.lobpcg(A, 2, tol=1e-10, maxiter=200, rng=args.seed)
np.testing.assert_allclose(np.sort(block), eigenvalues[-2:], atol=1e-6 * scale)
largest, _, info = thl.power_iteration(A, "LA", tol=1e-10, maxiter=5000, rng=args.seed)
assert info == 0
np.testing.assert_allclose(largest, eigenvalues[-1], rtol=1e-8)
print(f"eigenvalues (eigvalsh): {np.array2string(eigenvalues, precision=4)}")
print(
    f"eigsh largest {np.sort(top)[::-1]}, smallest {np.sort(bottom)}; "
    f"LOBPCG {np.sort(block)[::-1]}; power iteration {largest:.10f}"
)
print(f"Hessian-vector products in all: {A.n_hvp}")
for weight, value in zip(model.weights, before, strict=True):
    assert np.array_equal(weight.numpy(), value), "the analysis changed the model"

# %%
# The seed's ``log10 |H|`` heat map, a signed view and the spectrum.
labels = []
for index, variable in enumerate(model.trainable_variables):
    kind = "W" if len(variable.shape) == 2 else "b"
    labels += [f"{kind}{index // 2 + 1}[{i}]" for i in range(int(np.prod(variable.shape)))]
figure, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1, 1, 0.9]})
image = axes[0].imshow(np.log10(np.abs(dense) + 1e-16), cmap="viridis")
axes[0].set_title("log10 |H| (the seed's view)")
figure.colorbar(image, ax=axes[0], shrink=0.8)
limit = np.abs(dense).max()
image = axes[1].imshow(dense, cmap="RdBu_r", vmin=-limit, vmax=limit)
axes[1].set_title("H (signed; 0 = white)")
figure.colorbar(image, ax=axes[1], shrink=0.8)
for ax in axes[:2]:
    ax.set_xticks(range(H.n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(H.n), labels, fontsize=7)
axes[2].axhline(0.0, color="0.6", linewidth=0.8)
axes[2].plot(range(1, H.n + 1), eigenvalues, "o", label="numpy.linalg.eigvalsh")
axes[2].plot(
    [1, 2, H.n - 1, H.n],
    np.r_[np.sort(bottom), np.sort(top)],
    "x",
    color="C3",
    markersize=10,
    label="Lanczos (eigsh)",
)
axes[2].set_yscale("symlog", linthresh=1e-4)
axes[2].set_xlabel("index")
axes[2].set_ylabel("eigenvalue (symmetric log scale)")
axes[2].set_title("Spectrum")
axes[2].legend(fontsize=8)
figure.suptitle(f"Hessian of the XOR network's MSE ({H.n} parameters)")
figure.tight_layout()
figure.savefig(out / "xor_hessian.png", dpi=110)
