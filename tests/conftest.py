"""Shared test models and an independent dense-Hessian reference.

The reference is built by nested ``tf.GradientTape``s and ``tape.jacobian``
in eager mode, a route that shares no code with the package's HVP engine.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf


def dense_reference(loss, variables):
    """Dense float64 Hessian of ``loss()`` w.r.t. `variables` by nested jacobians."""
    variables = [v.value if not isinstance(v, tf.Variable) else v for v in variables]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            value = loss()
        grads = inner.gradient(value, variables, unconnected_gradients="zero")
        flat_grad = tf.concat([tf.reshape(tf.cast(g, tf.float64), [-1]) for g in grads], 0)
    blocks = outer.jacobian(flat_grad, variables, unconnected_gradients="zero")
    n = int(flat_grad.shape[0])
    return np.concatenate(
        [tf.reshape(b, [n, -1]).numpy().astype(np.float64) for b in blocks], axis=1
    )


def gradient_reference(loss, variables):
    variables = [v.value if not isinstance(v, tf.Variable) else v for v in variables]
    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, variables, unconnected_gradients="zero")
    return float(value), np.concatenate([g.numpy().reshape(-1) for g in grads]).astype(np.float64)


def mlp(dtype="float64", sizes=(3, 5, 2), activation="tanh", seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],), dtype=dtype)]
    for width in sizes[1:-1]:
        layers.append(keras.layers.Dense(width, activation=activation, dtype=dtype))
    layers.append(keras.layers.Dense(sizes[-1], dtype=dtype))
    return keras.Sequential(layers)


def xor_model(dtype="float64", seed=3):
    """The seed notebook's 2-2-1 network (9 parameters)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((2,), dtype=dtype),
            keras.layers.Dense(2, activation="softmax", dtype=dtype),
            keras.layers.Dense(1, dtype=dtype),
        ]
    )


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float64")
XOR_Y = np.array([[0], [1], [1], [0]], dtype="float64")


def mse_mean(model, x, y):
    """The mean-over-samples MSE loss as a zero-argument eager callable."""
    x = tf.constant(x)
    y = tf.constant(y)
    return lambda: tf.reduce_mean(tf.reduce_mean((model(x) - y) ** 2, axis=-1))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
