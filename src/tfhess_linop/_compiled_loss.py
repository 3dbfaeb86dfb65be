"""Keras' compiled loss, as exact per-batch shares of its whole-data value.

Keras' own ``CompileLoss`` resolves the outputs, targets, sample-weight
nests and loss weights as ``fit`` does; each output's loss in it is replaced
by an `_OutputShare`, which evaluates the loss unreduced and returns either
its numerator (sum of weighted values) and divisor, or its exact share
``numerator / global divisor``. The Keras internals this needs are imported
here only.
"""

from __future__ import annotations

import tensorflow as tf
from keras.src.backend.common.masking import get_keras_mask
from keras.src.losses.loss import apply_mask, squeeze_or_expand_to_same_rank
from keras.src.trainers.compile_utils import CompileLoss

__all__ = ["CompiledLossShares"]

_SUM_REDUCTIONS = (None, "none", "sum")
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean")


class CompiledLossShares:
    """A private ``CompileLoss`` whose per-output losses are replaced by `_OutputShare`.

    Keras resolves the outputs, targets, sample-weight nests and loss
    weights as in ``fit``. With ``divisors=None`` (the construction pass)
    each share records its numerator and divisor; with the global divisors
    it returns its exact share of the whole-data value.

    Parameters
    ----------
    model : keras.Model
    user_loss, user_weights
        What ``model.compile`` was given as ``loss`` and ``loss_weights``
        (``user_loss=None``: no compiled loss, `compile_loss` is None).
    y, predictions : tensor nests
        A first batch's targets and outputs, to build the CompileLoss.
    dtype : tf.DType
        The dtype the losses compute in.
    divisors : sequence of float, optional
        Global divisors of the per-sample outputs; None records instead.
    layout : CompiledLossShares, optional
        The recording instance, whose first trace learnt which outputs are
        per-sample and which batch-level.
    weight : callable, optional
        ``weight(position, batch_size)``: the factor of the position-th
        batch-level output loss.
    """

    def __init__(
        self,
        model,
        user_loss,
        user_weights,
        y,
        predictions,
        *,
        dtype,
        divisors=None,
        layout=None,
        weight=None,
    ):
        self.dtype = dtype
        self.weight = weight
        # Which outputs are per-sample or batch-level is learnt by the first trace.
        self.layout = self if layout is None else layout
        self.compile_loss = None
        self.outputs, self.per_sample, self.scalar_outputs = [], [], []
        self.divisors_global = divisors
        # Set by the curvature operators (GGN, Fisher) around one call: it
        # sees and may replace each loss's inputs, and sees its values.
        self.hook = None
        self.start(None)
        if user_loss is None:
            return
        names = getattr(model, "output_names", None)
        compile_loss = CompileLoss(user_loss, user_weights, output_names=names)
        try:
            compile_loss.build(y, predictions)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"`loss` does not fit the model's outputs and `y`: {exc}") from exc
        entries = compile_loss._flat_losses
        compile_loss._flat_losses = [
            entry._replace(loss=_OutputShare(entry.loss, index, self))
            for index, entry in enumerate(entries)
        ]
        # No per-output Mean trackers: they would assign variables in every
        # product. A list of Nones, not an empty one: Keras zips it with the losses.
        compile_loss._metrics = [None] * len(entries)
        compile_loss._dtype = dtype
        self.compile_loss = compile_loss
        if len(entries) == 1:
            self.outputs = [f"the compiled loss ({entries[0].name!r})"]
        else:
            self.outputs = [f"the loss of output {entry.name!r}" for entry in entries]

    def start(self, batch_size):
        """Forget the previous trace's records."""
        self.batch_size = batch_size
        self.divisors, self.numerators, self.scalars = [], [], []


class _OutputShare:
    """Stands in for one output's loss inside Keras' CompileLoss."""

    def __init__(self, loss, index, owner):
        self.loss = loss
        self.index = index
        self.owner = owner

    def __call__(self, y_true, y_pred, sample_weight=None):
        dtype = self.owner.dtype
        hook = self.owner.hook
        if hook is not None:
            y_true, y_pred = hook.inputs(self.index, self.loss, y_true, y_pred)
        # As keras.losses.Loss.__call__, but computed in the model's dtype.
        in_mask = get_keras_mask(y_pred)
        y_pred = tf.nest.map_structure(lambda t: tf.cast(t, dtype), y_pred)
        y_true = tf.nest.map_structure(lambda t: tf.cast(t, dtype), y_true)
        _check_no_broadcast(y_true, y_pred)
        values = tf.convert_to_tensor(self.loss.call(y_true, y_pred))
        mask = _merge_masks(in_mask, get_keras_mask(values))
        values = tf.cast(values, dtype)
        if hook is not None:
            hook.values(self.index, values)
        if values.shape.rank == 0:
            return self._batch_level(values, sample_weight, mask)
        numerator, divisor = _numerator_and_divisor(
            values, sample_weight, mask, self.loss.reduction, dtype
        )
        owner = self.owner
        if owner.divisors_global is None:
            _register(owner.per_sample, self.index)
            owner.numerators.append(numerator)
            owner.divisors.append(divisor)
            return numerator
        if self.loss.reduction in _SUM_REDUCTIONS:
            return numerator
        total = owner.divisors_global[owner.layout.per_sample.index(self.index)]
        return tf.math.divide_no_nan(numerator, tf.constant(total, dtype))

    def _batch_level(self, value, sample_weight, mask):
        if sample_weight is not None or mask is not None:
            raise ValueError(
                f"`loss` {self.loss.name!r} returns one value per batch, so sample weights "
                "and masks cannot be applied to it; return per-sample losses instead."
            )
        owner = self.owner
        if owner.divisors_global is None:
            _register(owner.scalar_outputs, self.index)
            owner.scalars.append(value)
            return value
        position = owner.layout.scalar_outputs.index(self.index)
        return owner.weight(position, owner.batch_size) * value


def _numerator_and_divisor(values, sample_weight, mask, reduction, dtype):
    """Keras' reduction of `values` as (sum of weighted values, divisor).

    Mirrors ``keras.losses.loss.reduce_weighted_values``, except that the
    mask is not rescaled by the batch's count of valid entries: that count
    is the divisor, summed over all batches.
    """
    weights = apply_mask(sample_weight, mask, dtype=dtype, reduction="sum")
    if weights is not None:
        weights = tf.cast(weights, dtype)
        values, weights = squeeze_or_expand_to_same_rank(values, weights)
        values = values * weights
    numerator = tf.reduce_sum(values)
    if reduction in _SUM_REDUCTIONS:
        divisor = tf.zeros((), dtype)
    elif reduction in _MEAN_REDUCTIONS and mask is not None:
        divisor = tf.reduce_sum(tf.cast(mask, dtype))
    elif reduction == "mean_with_sample_weight" and weights is not None:
        divisor = tf.reduce_sum(weights)
    else:
        divisor = tf.cast(tf.size(values), dtype)
    return numerator, divisor


def _register(indices, index):
    if index not in indices:
        indices.append(index)


def _merge_masks(in_mask, out_mask):
    if in_mask is not None and out_mask is not None:
        return tf.logical_and(tf.cast(in_mask, tf.bool), tf.cast(out_mask, tf.bool))
    return in_mask if in_mask is not None else out_mask


def _check_no_broadcast(y_true, y_pred):
    """Refuse targets that a loss would silently broadcast a prediction against."""
    for target, prediction in zip(tf.nest.flatten(y_true), tf.nest.flatten(y_pred), strict=False):
        t, p = target.shape, prediction.shape
        if t.rank is None or p.rank is None or t.rank != p.rank:
            continue
        if any(q == 1 and d is not None and d > 1 for d, q in zip(t[1:], p[1:], strict=True)):
            raise ValueError(
                f"`y` has shape {tuple(t)[1:]} per sample but the model's output has "
                f"{tuple(p)[1:]}: the loss would broadcast the prediction over the targets."
            )
