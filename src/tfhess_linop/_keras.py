"""The parameters of a Keras model (all trainable weights, or a subset), and exact moments."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import nn as _keras_tf_nn


def check_model(model):
    """Raise early if `model` cannot have a Hessian (not a model, not built, no weights)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if not model.built or not model.trainable_variables:
        raise ValueError(
            "`model` must be built and have trainable variables; call it on "
            "data once (or give it an Input) before building its Hessian."
        )


def keras_variables(model, variables=None):
    """The tf.Variables of `model`'s parameters: all trainable ones, or those chosen.

    Parameters
    ----------
    model : keras.Model
    variables : None or sequence of variables, layers or layer names
        None: ``model.trainable_variables``. Otherwise, in the order given:
        a variable (which must be one of the model's trainable variables),
        a layer or a layer's name (its trainable variables; a frozen layer
        has none, as in ``fit``).

    Returns
    -------
    list of tf.Variable
    """
    check_model(model)
    trainable = {
        id(underlying_variable(v)): underlying_variable(v) for v in model.trainable_variables
    }
    if variables is None:
        return list(trainable.values())
    if isinstance(variables, (str, keras.layers.Layer)) or not hasattr(variables, "__iter__"):
        variables = [variables]
    chosen = []
    for i, item in enumerate(variables):
        for variable in _expand(model, item, i):
            if id(variable) not in trainable:
                raise ValueError(
                    f"`variables[{i}]` ({variable.name}) is not a trainable variable of "
                    "`model` (frozen layers and non-trainable weights have no Hessian here)."
                )
            if all(variable is not v for v in chosen):
                chosen.append(variable)
    if not chosen:
        raise ValueError(
            "`variables` selects no trainable variable of `model` (are the layers frozen?)."
        )
    return chosen


def _expand(model, item, index):
    """The tf.Variables that one entry of `variables` stands for."""
    if isinstance(item, str):
        try:
            item = model.get_layer(item)
        except ValueError:
            names = [layer.name for layer in model.layers]
            raise ValueError(
                f"`variables[{index}]`: `model` has no layer named {item!r}; its layers: {names}."
            ) from None
    if isinstance(item, keras.layers.Layer):
        return [underlying_variable(v) for v in item.trainable_variables]
    variable = underlying_variable(item)
    if variable is None:
        raise TypeError(
            f"`variables[{index}]` must be a variable, a layer or a layer name; "
            f"got {type(item).__name__}."
        )
    return [variable]


def underlying_variable(item):
    """The tf.Variable behind a tf.Variable or a Keras 3 variable, else None."""
    if isinstance(item, tf.Variable):
        return item
    value = getattr(item, "value", None)
    return value if isinstance(value, tf.Variable) else None


@contextlib.contextmanager
def exact_moments():
    """Let Keras' normalization layers compute moments that differentiate twice.

    ``tf.nn.moments``, which Keras' BatchNormalization (training mode) and
    LayerNormalization use, puts a ``stop_gradient`` on the mean inside the
    variance: first derivatives stay exact (the variance's derivative with
    respect to the mean is zero), but a term of the second is dropped, and
    Hessians through these layers come out wrong (16 % on a small
    LayerNormalization model). Inside this context, which is entered while
    the objective is traced, the variance is ``mean((x - mean(x))**2)``.
    """
    original = _keras_tf_nn._compute_moments
    _keras_tf_nn._compute_moments = _moments
    try:
        yield
    finally:
        _keras_tf_nn._compute_moments = original


def _moments(x, axes, keepdims):
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    if not keepdims:
        mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
    return mean, variance
