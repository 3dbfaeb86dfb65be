"""A Keras model and loss as one batch's share of the mean loss."""

from __future__ import annotations

import keras
import tensorflow as tf


def per_sample_loss(loss):
    """Resolve `loss` to ``f(y_true, y_pred)`` returning unreduced losses.

    Loss objects are called through their unreduced ``call``: their
    ``__call__`` would reduce over the batch and cast to ``floatx``, which
    silently turns a float64 model's loss into float32.
    """
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"`loss` {loss!r} is not a Keras loss name ({exc}).") from None
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    if callable(loss):
        return loss
    raise TypeError(
        "`loss` must be a Keras loss name, a keras.losses.Loss or a callable "
        f"loss(y_true, y_pred); got {type(loss).__name__}."
    )


def keras_contribution(model, loss, n_global, *, training):
    """``contribution(x, y)``: the sum of the batch's per-sample losses / `n_global`.

    A loss returning a scalar is taken as the mean over the batch, so it is
    multiplied by the batch size; per-sample losses with trailing axes are
    averaged over those axes (as Keras does).
    """
    function = per_sample_loss(loss)

    def contribution(x, y):
        predictions = model(x, training=training)
        targets = _match_dtype(y, predictions)
        values = tf.convert_to_tensor(function(targets, predictions))
        if values.shape.rank == 0:
            batch = tf.shape(tf.nest.flatten(x)[0])[0]
            total = values * tf.cast(batch, values.dtype)
        else:
            if values.shape.rank > 1:
                values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
            total = tf.reduce_sum(values)
        return total / tf.cast(n_global, total.dtype)

    return contribution


def _match_dtype(targets, predictions):
    """Cast floating targets to the predictions' dtype (float64 models, float32 labels)."""
    if (
        isinstance(targets, tf.Tensor)
        and isinstance(predictions, tf.Tensor)
        and targets.dtype.is_floating
        and targets.dtype != predictions.dtype
    ):
        return tf.cast(targets, predictions.dtype)
    return targets
