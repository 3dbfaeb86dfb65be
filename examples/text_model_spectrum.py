"""The Hessian of a small text model
=================================

The Hessian of a small text model: top eigenvalues and trace against a dense reference.

A token-tagging model --- ``Embedding(mask_zero=True)``, an ``LSTM`` with an
L2 kernel regularizer, a ``Dense`` layer per token --- is trained for a few
epochs on padded sequences read from a ``tf.data`` pipeline. Its loss is
Keras' own objective: the cross-entropy of each token, **masked** (padding
does not count, and the mean is over the real tokens only), plus the L2
penalty from ``model.losses``.

`tfhess_linop.Hessian.from_keras` builds the Hessian of exactly that
objective on all the data, reading the dataset batch by batch (uneven
batches: the mask's divisor is the global number of real tokens, counted
once at construction). The script checks it against an independent dense
reference --- nested ``tf.GradientTape`` Jacobians of
``model.compute_loss(x, y, model(x))`` on all the data as one batch ---

- the loss and the gradient;
- the dense Hessian (`Hessian.dense`, block products through the LSTM's
  while loop) entry by entry;
- the top eigenvalues by Lanczos (`eigsh`) against
  :func:`numpy.linalg.eigvalsh`;
- the trace, exactly and by Hutch++ (`hutchpp_trace`);

and that the analysis left the model's weights bit-identical. The figure
``<out>/text_model_spectrum.png`` shows the Hessian, variable by variable
(the padding token's embedding has zero rows and columns: the mask hides
it from the loss), and its spectrum.

Run: ``python examples/text_model_spectrum.py [--out DIR]`` (``CI=true``:
small sizes, about half a minute).
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
import tensorflow as tf

import tfhess_linop as thl

QUICK = os.environ.get("CI", "").lower() == "true"
# samples, sequence length, vocabulary, embedding width, LSTM units, batch, epochs
SIZES = (80, 6, 10, 3, 3, 32, 3) if QUICK else (600, 10, 24, 6, 6, 64, 8)
TOP = 4

# Float64 layers, so that the comparison is tight; Keras losses compute in
# floatx, so a float64 model needs float64 floatx for its compiled loss.
keras.config.set_floatx("float64")
F64 = "float64"


def tagged_sequences(samples, length, vocabulary, seed):
    """Padded token sequences; each real token is tagged 1 if it exceeds the one before."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, length + 1, samples)
    x = np.zeros((samples, length), np.int64)
    y = np.zeros((samples, length), np.int64)
    for i, size in enumerate(lengths):
        tokens = rng.integers(1, vocabulary, size)
        x[i, :size] = tokens
        y[i, 1:size] = tokens[1:] > tokens[:-1]
    return x, y


def text_model(length, vocabulary, width, units, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((length,), dtype="int64"),
            keras.layers.Embedding(vocabulary, width, mask_zero=True, name="embedding", dtype=F64),
            keras.layers.LSTM(
                units,
                return_sequences=True,
                kernel_regularizer=keras.regularizers.L2(1e-3),
                name="lstm",
                dtype=F64,
            ),
            keras.layers.Dense(2, name="tags", dtype=F64),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def dense_reference(model, x, y):
    """Loss, gradient and Hessian of ``model.compute_loss`` on all the data as one batch.

    Nested tapes in one ``tf.function`` (rows of the Jacobian of the
    gradient, one at a time): nothing is shared with the package.
    """
    x, y = tf.constant(x), tf.constant(y)
    variables = [v.value for v in model.trainable_variables]

    @tf.function
    def compute():
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as inner:
                value = model.compute_loss(x=x, y=y, y_pred=model(x))
            gradients = inner.gradient(value, variables)
            flat = tf.concat([tf.reshape(g, [-1]) for g in gradients], axis=0)
        rows = outer.jacobian(flat, variables, experimental_use_pfor=False)
        n = tf.shape(flat)[0]
        return value, flat, tf.concat([tf.reshape(r, [n, -1]) for r in rows], axis=1)

    value, gradient, hessian = compute()
    return float(value), gradient.numpy(), hessian.numpy()


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(description="The Hessian of a small text model")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
start = time.perf_counter()

# %%
# Train the tagger on padded sequences from a ``tf.data`` pipeline.
samples, length, vocabulary, width, units, batch, epochs = SIZES
x, y = tagged_sequences(samples, length, vocabulary, args.seed)
# The same batches on every pass: the Hessian reads the dataset on every
# product, so it must not reshuffle between them.
dataset = (
    tf.data.Dataset.from_tensor_slices((x, y))
    .shuffle(samples, seed=args.seed, reshuffle_each_iteration=False)
    .batch(batch)
)
model = text_model(length, vocabulary, width, units, args.seed)
history = model.fit(dataset, epochs=epochs, shuffle=False, verbose=0).history["loss"]
tokens = int(np.count_nonzero(x))
print(
    f"text model: {samples} sequences, {tokens} real tokens of {x.size}; "
    f"loss {history[0]:.4f} -> {history[-1]:.4f} in {epochs} epochs"
)
before = [w.numpy().copy() for w in model.weights]

# %%
# The Hessian of the compiled objective, read batch by batch, against the
# nested-tape reference on all the data.
H = thl.Hessian.from_keras(model, x=dataset)  # the compiled loss + model.losses
print(H)
value, gradient, reference = dense_reference(model, x, y)
scale = np.abs(reference).max()
loss, g = H.value_and_gradient()
np.testing.assert_allclose(loss, value, rtol=1e-12)
np.testing.assert_allclose(g, gradient, rtol=0, atol=1e-12 * np.abs(gradient).max())
print(f"loss {loss:.15f}, model.compute_loss on all data as one batch {value:.15f}")

dense = H.dense()
np.testing.assert_allclose(dense, reference, rtol=0, atol=1e-11 * scale)
print(
    f"dense Hessian ({H.n} x {H.n}) = nested-tape reference to "
    f"{np.abs(dense - reference).max() / scale:.1e} of its largest entry"
)

# %%
# Top eigenvalues by Lanczos and the trace by Hutch++.
exact = np.linalg.eigvalsh(0.5 * (reference + reference.T))
A = thl.as_linop(H)
top = np.sort(thl.eigsh(A, k=TOP, which="LA", return_eigenvectors=False))[::-1]
lanczos_products = A.n_hvp
np.testing.assert_allclose(top, exact[::-1][:TOP], rtol=0, atol=1e-10 * exact[-1])
print(f"top eigenvalues, eigsh ({lanczos_products} products):".ljust(44), top)
print("top eigenvalues, reference (eigvalsh):".ljust(44), exact[::-1][:TOP])

trace = np.trace(reference)
np.testing.assert_allclose(np.trace(dense), trace, rtol=1e-11)
estimate = thl.hutchpp_trace(A, H.n // 4 if QUICK else 60, rng=args.seed)
assert abs(estimate.estimate - trace) <= 0.1 * abs(trace), (estimate, trace)
print(
    f"trace: H.dense() {np.trace(dense):.12f}, reference {trace:.12f}, Hutch++ "
    f"({estimate.num_matvecs} products) {estimate.estimate:.6f} "
    f"+- {estimate.standard_error:.6f}"
)
for weight, saved in zip(model.weights, before, strict=True):
    assert np.array_equal(weight.numpy(), saved), "the analysis changed the model"

# %%
# The Hessian variable by variable, and its spectrum.
figure, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.1]})
image = axes[0].imshow(np.log10(np.abs(dense) + 1e-12 * scale), cmap="viridis")
figure.colorbar(image, ax=axes[0], shrink=0.8)
edges = np.cumsum([int(np.prod(v.shape)) for v in model.trainable_variables])
names = [f"{layer.name}/{v.name}" for layer in model.layers for v in layer.trainable_variables]
for edge in edges[:-1]:
    axes[0].axhline(edge - 0.5, color="w", linewidth=0.6)
    axes[0].axvline(edge - 0.5, color="w", linewidth=0.6)
middles = np.r_[0, edges[:-1]] + np.diff(np.r_[0, edges]) / 2 - 0.5
axes[0].set_yticks(middles, names, fontsize=7)
axes[0].set_xticks([])
axes[0].set_title("log10 |H|, blocks by variable")
index = np.arange(1, H.n + 1)
axes[1].axhline(0.0, color="0.6", linewidth=0.8)
axes[1].plot(index, exact[::-1], ".", label="reference: eigvalsh of nested tapes")
axes[1].plot(index[:TOP], top, "x", color="C3", markersize=10, label=f"eigsh, top {TOP}")
axes[1].set_yscale("symlog", linthresh=10.0 ** np.floor(np.log10(1e-4 * exact[-1])))
axes[1].set_xlabel("index (descending)")
axes[1].set_ylabel("eigenvalue (symmetric log scale)")
axes[1].set_title(
    f"Spectrum: trace {trace:.4f}, Hutch++ {estimate.estimate:.4f} "
    f"({estimate.num_matvecs} products)"
)
axes[1].legend(fontsize=8)
figure.suptitle(
    f"Hessian of a masked Embedding + LSTM tagger, L2-regularized ({H.n} parameters, "
    f"{samples} sequences in batches of {batch})"
)
figure.tight_layout()
figure.savefig(out / "text_model_spectrum.png", dpi=110)
print(f"finished in {time.perf_counter() - start:.0f} s")
