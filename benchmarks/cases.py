"""The benchmark cases: models, fixed-seed random data, and the baselines.

Every case is built from fixed seeds, so every process (the harness, the
dense and MPI workers) builds bit-identical weights and data. The baselines
are written here, independently of the package, with plain TensorFlow:

- ``gradient``: the yardstick, a compiled (``tf.function``) value and
  gradient by ``GradientTape`` on the same data, returned as a flat NumPy
  vector (a matvec returns one too);
- ``seed_hvp``: the seed module's way of computing a Hessian-vector product,
  eagerly, forward-over-reverse with one ``ForwardAccumulator`` over all
  variables (Keras 3 needs the underlying ``v.value`` as primals);
- ``jacobian``: the dense Hessian as ``GradientTape.jacobian`` of the
  gradient (nested tapes, default pfor), compiled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Case:
    """One model on one data set."""

    name: str
    description: str
    kind: str  # "xor", "mlp" or "conv"
    layers: tuple = ()
    samples: int = 512
    dtype: str = "float32"
    seed: int = 0


CASES = {
    case.name: case
    for case in [
        Case(
            "xor", "seed XOR net: Dense(2, softmax) -> Dense(1), MSE, 4 samples", "xor", samples=4
        ),
        Case(
            "mlp_f32",
            "MLP 784-128-10 tanh, softmax CE, 512 samples, float32",
            "mlp",
            (784, 128, 10),
        ),
        Case(
            "mlp_f64",
            "MLP 784-128-10 tanh, softmax CE, 512 samples, float64",
            "mlp",
            (784, 128, 10),
            dtype="float64",
        ),
        Case(
            "mlp_large",
            "MLP 784-1024-256-10 tanh, softmax CE, 512 samples, float32",
            "mlp",
            (784, 1024, 256, 10),
        ),
        Case(
            "conv",
            "Conv2D(8,3,s2)-Conv2D(16,3,s2)-Dense(80)-Dense(10) tanh, "
            "28x28x1, 512 samples, float32",
            "conv",
        ),
        # Dense-Hessian cases (n ~ 1,000 and ~ 5,000).
        Case("dense_1k", "MLP 16-48-4 tanh, softmax CE, 512 samples, float32", "mlp", (16, 48, 4)),
        Case(
            "dense_5k", "MLP 32-128-6 tanh, softmax CE, 512 samples, float32", "mlp", (32, 128, 6)
        ),
        # Smoke runs of the algorithms (float64, n = 4,998).
        Case(
            "small_f64",
            "MLP 32-128-6 tanh, softmax CE, 128 samples, float64",
            "mlp",
            (32, 128, 6),
            samples=128,
            dtype="float64",
        ),
        # The data-heavy MPI case.
        Case(
            "mpi_mlp",
            "MLP 784-128-10 tanh, softmax CE, 8192 samples, float32",
            "mlp",
            (784, 128, 10),
            samples=8192,
        ),
    ]
}


def with_samples(case, samples):
    """The same case on another number of samples (quick runs)."""
    return Case(
        case.name,
        case.description.replace(str(case.samples), str(samples)),
        case.kind,
        case.layers,
        samples,
        case.dtype,
        case.seed,
    )


def build(case):
    """Build ``(model, loss, x, y)`` for `case`.

    `loss` is a Keras loss whose ``call`` returns per-sample losses.
    """
    import keras

    keras.utils.set_random_seed(case.seed)
    rng = np.random.default_rng(case.seed)
    dtype = case.dtype
    if case.kind == "xor":
        init = keras.initializers.RandomNormal(mean=0.0, stddev=0.05, seed=case.seed)
        model = keras.Sequential(
            [
                keras.Input((2,), dtype=dtype),
                keras.layers.Dense(2, activation="softmax", bias_initializer=init, dtype=dtype),
                keras.layers.Dense(1, dtype=dtype),
            ]
        )
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
        y = np.array([[0], [1], [1], [0]], dtype=dtype)
        return model, keras.losses.MeanSquaredError(), x, y
    if case.kind == "mlp":
        sizes = case.layers
        layers = [keras.Input((sizes[0],), dtype=dtype)]
        layers += [
            keras.layers.Dense(width, activation="tanh", dtype=dtype) for width in sizes[1:-1]
        ]
        layers.append(keras.layers.Dense(sizes[-1], dtype=dtype))
        x = rng.standard_normal((case.samples, sizes[0])).astype(dtype)
        y = rng.integers(0, sizes[-1], case.samples).astype("int32")
    elif case.kind == "conv":
        layers = [
            keras.Input((28, 28, 1), dtype=dtype),
            keras.layers.Conv2D(8, 3, strides=2, activation="tanh", dtype=dtype),
            keras.layers.Conv2D(16, 3, strides=2, activation="tanh", dtype=dtype),
            keras.layers.Flatten(dtype=dtype),
            keras.layers.Dense(80, activation="tanh", dtype=dtype),
            keras.layers.Dense(10, dtype=dtype),
        ]
        x = rng.standard_normal((case.samples, 28, 28, 1)).astype(dtype)
        y = rng.integers(0, 10, case.samples).astype("int32")
    else:
        raise ValueError(f"unknown case kind {case.kind!r}")
    model = keras.Sequential(layers)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, loss, x, y


def n_parameters(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def _mean_loss(model, loss, x, y):
    import tensorflow as tf

    return tf.reduce_mean(loss.call(y, model(x, training=False)))


def gradient(model, loss, x, y):
    """The yardstick: compiled value-and-gradient, flat NumPy gradient out."""
    import tensorflow as tf

    x, y = tf.constant(x), tf.constant(y)
    variables = model.trainable_variables

    @tf.function
    def value_and_gradient():
        with tf.GradientTape() as tape:
            value = _mean_loss(model, loss, x, y)
        grads = tape.gradient(value, variables)
        return value, tf.concat([tf.reshape(g, [-1]) for g in grads], 0)

    return lambda: value_and_gradient()[1].numpy()


def seed_hvp(model, loss, x, y):
    """The seed module's HVP: eager forward-over-reverse, NumPy vector in and out."""
    import tensorflow as tf

    x, y = tf.constant(x), tf.constant(y)
    variables = model.trainable_variables
    primals = [v.value for v in variables]
    shapes = [tuple(v.shape) for v in variables]
    bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    dtype = variables[0].dtype

    def hvp(vector):
        tangents = [
            tf.constant(vector[a:b].reshape(s), dtype=dtype)
            for a, b, s in zip(bounds[:-1], bounds[1:], shapes, strict=True)
        ]
        with tf.autodiff.ForwardAccumulator(primals, tangents) as accumulator:
            with tf.GradientTape() as tape:
                value = _mean_loss(model, loss, x, y)
            grads = tape.gradient(value, variables)
        return np.concatenate([accumulator.jvp(g).numpy().ravel() for g in grads])

    return hvp


def jacobian(model, loss, x, y):
    """The dense Hessian as the compiled jacobian of the gradient (nested tapes, pfor)."""
    import tensorflow as tf

    x, y = tf.constant(x), tf.constant(y)
    variables = model.trainable_variables
    n = n_parameters(model)

    @tf.function
    def hessian():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = _mean_loss(model, loss, x, y)
            grads = inner.gradient(value, variables)
            flat = tf.concat([tf.reshape(g, [-1]) for g in grads], 0)
        blocks = outer.jacobian(flat, variables)
        return tf.concat([tf.reshape(b, [n, -1]) for b in blocks], 1)

    return lambda: hessian().numpy()


def compiled_hvp(model, loss, x, y):
    """A hand-written reverse-over-reverse HVP in one ``tf.function``.

    Flat float64 vector in and out, like a matvec, but none of the package:
    the floor that a matvec's overhead is measured against.
    """
    import tensorflow as tf

    x, y = tf.constant(x), tf.constant(y)
    variables = model.trainable_variables
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(s)) for s in shapes]
    dtype = variables[0].dtype

    @tf.function(input_signature=[tf.TensorSpec([sum(sizes)], tf.float64)])
    def hvp(vector):
        tangents = [
            tf.reshape(tf.cast(t, dtype), s)
            for t, s in zip(tf.split(vector, sizes), shapes, strict=True)
        ]
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = _mean_loss(model, loss, x, y)
            grads = inner.gradient(value, variables)
            directional = tf.add_n(
                [tf.reduce_sum(g * t) for g, t in zip(grads, tangents, strict=True)]
            )
        hv = outer.gradient(directional, variables)
        return tf.concat([tf.reshape(tf.cast(h, tf.float64), [-1]) for h in hv], 0)

    return lambda vector: hvp(tf.constant(vector)).numpy()
