"""Sharpness during training: a Keras callback
===========================================

The Hessian's top eigenvalue and trace per epoch of a small CNN, logged by a callback.

`tfhess_linop.keras.CurvatureMonitor` is a ``keras.callbacks.Callback``:
after every epoch it takes the Hessian of the objective the model was
compiled to train on held-out data, and adds its largest eigenvalues
(Lanczos), its trace (Hutch++) and its smallest eigenvalue to the epoch's
``logs`` -- so they land in ``History``, ``CSVLogger`` and ``TensorBoard``
like the loss. The "sharpness" (the top eigenvalue) is what edge-of-stability
and large-batch studies follow: plain gradient descent with learning rate
:math:`\\eta` is stable along a direction only while its curvature stays
below :math:`2/\\eta`.

A small convolutional network learns to tell three kinds of noisy 8x8
stripes apart. The script checks that the monitor does not change training
(the same fit without it gives bit-identical weights), and that the last
logged values are the eigenvalues and trace of the dense Hessian at the
final weights. The figure ``<out>/curvature_monitor.png`` shows the loss
and the top eigenvalues per epoch side by side.

Run: ``python examples/curvature_monitor.py [--out DIR]``.
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

import tfhess_linop as thl
from tfhess_linop.keras import CurvatureMonitor

QUICK = os.environ.get("CI", "").lower() == "true"
F64 = "float64"
EPOCHS = 6 if QUICK else 12
LEARNING_RATE = 0.5


def stripes(samples, rng):
    """Noisy 8x8 images of horizontal, vertical or diagonal stripes, and their class."""
    labels = rng.integers(0, 3, samples)
    rows, columns = np.mgrid[0:8, 0:8]
    patterns = np.stack([rows % 3 == 0, columns % 3 == 0, (rows + columns) % 3 == 0])
    images = patterns[labels] + 0.8 * rng.standard_normal((samples, 8, 8))
    return images[..., None].astype(F64), labels


def small_cnn(seed):
    """Conv 3x3 (4 filters), max-pooling, a dense softmax layer: 151 weights, float64."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), dtype=F64),
            keras.layers.Conv2D(4, 3, activation="tanh", dtype=F64),
            keras.layers.MaxPooling2D(2, dtype=F64),
            keras.layers.Flatten(dtype=F64),
            keras.layers.Dense(3, dtype=F64),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=F64),
        metrics=["accuracy"],
    )
    return model


# %%
# The command line, and the data: training images, and held-out ones for the
# monitor and for validation.

parser = argparse.ArgumentParser(description="Sharpness of a small CNN during training")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)

rng = np.random.default_rng(args.seed)
x, y = stripes(240, rng)
x_held, y_held = stripes(96, rng)

# %%
# Training with the monitor: the two largest eigenvalues, the smallest and the
# trace after every epoch, at most 200 Hessian-vector products each. It is
# listed before ``CSVLogger`` so that the logger sees its values.

monitor = CurvatureMonitor(x_held, y_held, k=2, smallest=True, trace_matvecs=30, max_hvps=200)
model = small_cnn(args.seed)
history = model.fit(
    x,
    y,
    epochs=EPOCHS,
    batch_size=32,
    validation_data=(x_held, y_held),
    callbacks=[monitor, keras.callbacks.CSVLogger(str(out / "curvature_monitor.csv"))],
    verbose=0,
).history

print(f"{model.count_params()} weights; 2 / learning rate = {2 / LEARNING_RATE:g}")
print("epoch   loss  val_loss  accuracy  eig_1    eig_2    eig_min   trace     HVPs")
for epoch, record in enumerate(monitor.records):
    print(
        f"{epoch + 1:5d} {history['loss'][epoch]:7.4f} {history['val_loss'][epoch]:8.4f} "
        f"{history['accuracy'][epoch]:8.3f}  {history['hessian_eig_1'][epoch]:7.4f}  "
        f"{history['hessian_eig_2'][epoch]:7.4f}  {history['hessian_eig_min'][epoch]:+8.4f} "
        f"{history['hessian_trace'][epoch]:8.4f}  {record['hvps']:4d}"
    )

# %%
# The monitor changes nothing: the same fit without it ends at bit-identical
# weights.

plain = small_cnn(args.seed)
plain.fit(x, y, epochs=EPOCHS, batch_size=32, validation_data=(x_held, y_held), verbose=0)
for a, b in zip(model.get_weights(), plain.get_weights(), strict=True):
    assert a.tobytes() == b.tobytes()
print("weights with and without the monitor: bit-identical")

# %%
# The last logged values against ``eigvalsh`` of the dense Hessian at the
# final weights (its columns: products with the identity's columns).

A = thl.as_linop(monitor.hessian)
dense = np.column_stack([A @ column for column in np.eye(A.shape[0])])
eigenvalues = np.linalg.eigvalsh(dense)
scale = np.abs(eigenvalues).max()
logged = [history[f"hessian_eig_{i}"][-1] for i in (1, 2)]
np.testing.assert_allclose(logged, eigenvalues[::-1][:2], rtol=1e-8, atol=1e-10 * scale)
np.testing.assert_allclose(history["hessian_eig_min"][-1], eigenvalues[0], atol=1e-8 * scale)
record = monitor.records[-1]
assert abs(record["trace"] - np.trace(dense)) < 4 * record["trace_standard_error"] + 1e-9
print(
    f"last epoch: eig_1 {logged[0]:.8f} (eigvalsh {eigenvalues[-1]:.8f}), trace "
    f"{record['trace']:.4f} ± {record['trace_standard_error']:.2g} (exact {np.trace(dense):.4f})"
)

# %%
# The loss and the curvature per epoch.

epochs = np.arange(1, EPOCHS + 1)
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
left.plot(epochs, history["loss"], "o-", label="training loss")
left.plot(epochs, history["val_loss"], "s--", label="held-out loss")
left.set_xlabel("epoch")
left.set_ylabel("cross-entropy")
left.set_title("loss")
left.legend()
right.plot(epochs, history["hessian_eig_1"], "o-", color="C3", label="largest eigenvalue")
right.plot(epochs, history["hessian_eig_2"], "o:", color="C1", label="second largest")
right.plot(epochs, history["hessian_eig_min"], "v-", color="C2", label="smallest")
right.axhline(2 / LEARNING_RATE, color="0.3", linestyle="--", linewidth=1, label="2 / η")
right.axhline(0.0, color="0.5", linewidth=0.8)
right.set_ylim(top=1.45 * max(2 / LEARNING_RATE, *history["hessian_eig_1"]))
right.set_xlabel("epoch")
right.set_ylabel("eigenvalue")
right.set_title("Hessian on held-out data")
right.legend(loc="upper center", ncol=2, fontsize=9)
figure.suptitle(f"A {model.count_params()}-weight CNN trained by SGD (η = {LEARNING_RATE:g})")
figure.tight_layout()
figure.savefig(out / "curvature_monitor.png", dpi=110)
