"""The loss side of the loss-output split: each compiled loss's curvature in its outputs.

The curvature operators (GGN, Fisher, empirical Fisher) write the objective
Keras trains as ``L(θ) = ℓ(s(θ)) + R(θ)``: the compiled loss ℓ, a function of
the tensors s that enter it (one per output), and the batch-level terms R
(``model.losses``). Each output's s is the tensor Keras' loss differentiates:
the model's output, or, for a cross-entropy of a softmax or sigmoid output,
the logits Keras itself takes the loss of. The loss is re-evaluated by
Keras' own compiled loss with s (and, for the Fisher, the targets)
substituted, so sample weights, masks, reductions, loss weights and the
global divisors are those of the objective.

Which losses have an output curvature here: mean squared error, categorical,
sparse categorical and binary cross-entropy (from logits or probabilities).
Their per-sample value is a function of one row ``s[..., :]`` (the last axis),
and each is, up to a scale, the negative log-likelihood of a distribution
over the targets (a Gaussian of variance 1/2, a categorical, independent
Bernoullis), which the Fisher samples from.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

__all__ = ["OutputLoss", "OutputSplit", "output_losses", "sample_hash"]

_ZERO = tf.UnconnectedGradients.ZERO
_KINDS = {
    keras.losses.mean_squared_error: "mse",
    keras.losses.categorical_crossentropy: "categorical",
    keras.losses.sparse_categorical_crossentropy: "sparse_categorical",
    keras.losses.binary_crossentropy: "binary",
}
SUPPORTED = (
    "mean squared error, categorical, sparse categorical and binary cross-entropy "
    "(from logits or probabilities)"
)
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class OutputLoss:
    """One compiled loss entry: its position, name and kind."""

    index: int
    name: str
    kind: str
    from_logits: bool
    label_smoothing: float
    ignore_class: object


def output_losses(objective, operator, *, fisher=False):
    """The compiled losses of `objective`, checked to have an output curvature.

    Raises `ValueError` naming the loss that has none (or, for the Fisher,
    that is not a likelihood: label smoothing, ignored classes).
    """
    if objective._override:
        raise ValueError(
            f"{operator} needs the model's output and a compiled loss to split the "
            "objective at, but `model` overrides `compute_loss`."
        )
    compile_loss = objective._shares.compile_loss
    if compile_loss is None:
        raise ValueError(
            f"{operator} needs a compiled loss of the model's outputs: compile the model "
            "with a loss or pass `loss=`."
        )
    losses = []
    for index, entry in enumerate(compile_loss._flat_losses):
        loss = entry.loss.loss
        function = getattr(loss, "fn", None)
        kind = _KINDS.get(function) if function is not None else None
        name = getattr(function, "__name__", None) or type(loss).__name__
        if kind is None:
            raise ValueError(
                f"{operator} has an exact output Hessian for {SUPPORTED}; the loss of "
                f"output {entry.name!r} is {name!r}."
            )
        options = getattr(loss, "_fn_kwargs", {})
        if options.get("axis", -1) != -1:
            raise ValueError(
                f"{operator} needs the class axis last; the loss of output {entry.name!r} "
                f"has axis={options['axis']}."
            )
        smoothing = float(options.get("label_smoothing", 0.0) or 0.0)
        ignore = options.get("ignore_class")
        if fisher and (smoothing or ignore is not None):
            raise ValueError(
                f"{operator}: the loss of output {entry.name!r} is not a negative "
                "log-likelihood of the model's distribution (label_smoothing or "
                "ignore_class), so it has no Fisher."
            )
        logits = bool(options.get("from_logits", False))
        losses.append(OutputLoss(index, entry.name, kind, logits, smoothing, ignore))
    return losses


class _Recorder:
    """Hook that records each loss's inputs, unchanged."""

    def __init__(self):
        self.inputs_seen = {}

    def inputs(self, index, loss, y_true, y_pred):
        self.inputs_seen[index] = (y_true, y_pred)
        return y_true, y_pred

    def values(self, index, values):
        pass


class _Substitute:
    """Hook that replaces each loss's prediction (and target) and records its values."""

    def __init__(self, predictions, targets):
        self.predictions, self.targets = predictions, targets
        self.loss_values = {}

    def inputs(self, index, loss, y_true, y_pred):
        return self.targets.get(index, y_true), self.predictions[index]

    def values(self, index, values):
        self.loss_values[index] = values


class OutputSplit:
    """The tensors the compiled losses of one batch are functions of, and the loss of them.

    Parameters
    ----------
    objective : KerasObjective
    losses : list of OutputLoss
    batch : tuple
        ``(x, y, sample_weight, predictions)`` of one batch, the predictions
        computed under the caller's tapes.

    Attributes
    ----------
    points : dict of int to tensor
        Per loss entry, the tensor its loss is a function of (connected to
        the parameters): the output, or its logits.
    """

    def __init__(self, objective, losses, batch):
        self._objective = objective
        self._batch = batch
        self._losses = {loss.index: loss for loss in losses}
        recorder = _Recorder()
        self._call(recorder)
        self.points, self._rebuild, self.logits = {}, {}, {}
        for index, loss in self._losses.items():
            _, output = recorder.inputs_seen[index]
            point, activation = _split_point(loss.kind, output)
            self.points[index] = point
            # Whether the split point is logits: taken from an activation, or the
            # loss's own `from_logits`.
            self.logits[index] = activation is not None or (loss.kind != "mse" and loss.from_logits)
            self._rebuild[index] = (activation, getattr(output, "_keras_mask", None))

    def _call(self, hook):
        shares = self._objective._shares
        shares.hook = hook
        try:
            return self._objective.output_term(*self._batch)
        finally:
            shares.hook = None

    def loss(self, points, targets=None):
        """(The compiled loss's share at `points`, each loss's unreduced values)."""
        predictions = {}
        for index, point in points.items():
            activation, mask = self._rebuild[index]
            output = point if activation is None else activation(point)
            if activation is not None:
                output._keras_logits = point
            if mask is not None:
                output._keras_mask = mask
            predictions[index] = output
        hook = _Substitute(predictions, targets or {})
        value = self._call(hook)
        for index in points:
            values = hook.loss_values.get(index)
            if values is None or values.shape.rank != points[index].shape.rank - 1:
                raise ValueError(
                    f"the loss of output {self._losses[index].name!r} must give one value "
                    "per row of the output's last axis to have an output curvature; got "
                    f"values of shape {None if values is None else tuple(values.shape)} "
                    f"for an output of shape {tuple(points[index].shape)}."
                )
        return value, hook.loss_values

    # ----------------------------------------------------------- products

    def hessian_product(self, points, tangents, targets=None):
        """∇²ℓ(s) t: the output Hessian at `points` applied to `tangents` (per loss)."""
        keys = sorted(points)
        sources = [points[k] for k in keys]
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(sources)
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(sources)
                value, _ = self.loss(points, targets)
            grads = inner.gradient(value, sources, unconnected_gradients=_ZERO)
            directional = tf.add_n(
                [tf.reduce_sum(g * tangents[k]) for g, k in zip(grads, keys, strict=True)]
            )
        products = outer.gradient(directional, sources, unconnected_gradients=_ZERO)
        return dict(zip(keys, products, strict=True))

    def weighted_gradients(self, points, targets=None):
        """(∂ℓ/∂s per loss, ∂ℓ/∂values per loss): each row's gradient and objective weight."""
        keys = sorted(points)
        sources = [points[k] for k in keys]
        with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
            tape.watch(sources)
            value, values = self.loss(points, targets)
        grads = tape.gradient(value, sources, unconnected_gradients=_ZERO)
        weights = tape.gradient(value, [values[k] for k in keys], unconnected_gradients=_ZERO)
        del tape
        return dict(zip(keys, grads, strict=True)), dict(zip(keys, weights, strict=True))

    def mean_targets(self, points):
        """The targets' expectation under the model (for the dense-target losses)."""
        targets = {}
        for index, point in points.items():
            kind, logits = self._losses[index].kind, self.logits[index]
            if kind == "categorical":
                targets[index] = _probabilities(point, logits)
            elif kind == "binary":
                targets[index] = tf.sigmoid(point) if logits else tf.clip_by_value(point, 0, 1)
        return targets

    def sampled_targets(self, points, key, stream):
        """One draw of targets from the model's distribution, fixed by `key` and `stream`."""
        targets = {}
        for index, point in points.items():
            kind, logits = self._losses[index].kind, self.logits[index]
            u = _uniform(key, point, (stream, index))
            if kind == "mse":
                noise = tf.cast(np.sqrt(0.5) * tf.math.ndtri(u), point.dtype)
                targets[index] = point + noise
            elif kind == "binary":
                p = tf.sigmoid(point) if logits else tf.clip_by_value(point, 0, 1)
                targets[index] = tf.cast(u < tf.cast(p, tf.float64), point.dtype)
            else:
                probabilities = tf.cast(_probabilities(point, logits), tf.float64)
                log_p = tf.math.log(tf.maximum(probabilities, np.finfo(np.float64).tiny))
                gumbel = -tf.math.log(-tf.math.log(u))
                classes = tf.argmax(log_p + gumbel, axis=-1)
                if kind == "categorical":
                    targets[index] = tf.one_hot(classes, point.shape[-1], dtype=point.dtype)
                else:
                    targets[index] = classes
        return targets

    def class_probabilities(self, index, point):
        """The model's class probabilities of a (sparse) categorical output."""
        return _probabilities(point, self.logits[index])

    def likelihood_scale(self, index, point):
        """s with ``loss = s * (negative log-likelihood)`` per row: 1/C for row means."""
        if self._losses[index].kind in ("mse", "binary"):
            return 1.0 / int(point.shape[-1])
        return 1.0

    def kind(self, index):
        return self._losses[index].kind


def _split_point(kind, output):
    """(The tensor Keras' loss is a function of, the activation from it to `output`)."""
    if kind == "mse":
        return output, None
    expected = "Sigmoid" if kind == "binary" else "Softmax"
    op_type = getattr(getattr(output, "op", None), "type", None)
    logits = getattr(output, "_keras_logits", None)
    if logits is None and op_type == expected and len(output.op.inputs) == 1:
        logits = output.op.inputs[0]
    if logits is None:
        return output, None
    if op_type == "Softmax":
        activation = tf.nn.softmax
    elif op_type == "Sigmoid":
        activation = tf.sigmoid
    else:
        activation = tf.sigmoid if kind == "binary" else tf.nn.softmax
    return logits, activation


def _probabilities(point, logits):
    if logits:
        return tf.nn.softmax(point)
    return point / tf.reduce_sum(point, axis=-1, keepdims=True)


# ------------------------------------------------------------- random draws
# The Fisher's draws are keyed by each sample's content, not by its position
# in a batch, so that every batching and every number of ranks draws the same
# targets for the same sample (and the operator is one fixed matrix).


def _mix(x):
    """A 32-bit integer hash (in int64, every product below 2**63)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = tf.bitwise.bitwise_and(x * 0x7FEB352D, _MASK)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = tf.bitwise.bitwise_and(x * 0x2C1B3C6D, _MASK)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _words(tensor):
    """A (batch, d) int64 tensor of 32-bit words holding `tensor`'s per-sample bits."""
    batch = tf.shape(tensor)[0]
    if tensor.dtype == tf.string:
        words = tf.strings.to_hash_bucket_fast(tensor, 2**31 - 1)
    elif tensor.dtype.is_floating:
        width = {2: tf.int16, 4: tf.int32, 8: tf.int32}[tensor.dtype.size]
        words = tf.cast(tf.bitcast(tensor, width), tf.int64)
    else:
        words = tf.cast(tensor, tf.int64)
        words = tf.bitwise.bitwise_xor(words, tf.bitwise.right_shift(words, 32))
    return tf.bitwise.bitwise_and(tf.reshape(words, [batch, -1]), _MASK)


def sample_hash(x):
    """One 32-bit hash per sample of the input nest `x`, from its content: shape (batch,).

    A sum of the sample's 32-bit words times per-position odd constants
    (modulo 2**32; three integer operations per word), then mixed.
    """
    total = None
    for leaf_index, leaf in enumerate(tf.nest.flatten(x)):
        words = _words(tf.convert_to_tensor(leaf))
        width = words.shape[1]
        if width is not None:
            # A static width: the constants are a constant of the graph.
            positions = np.arange(width, dtype=np.int64) + 0x10000 * (leaf_index + 1)
            constants = tf.constant((_mix_numpy(positions) & 0x7FFFFFFF) | 1)
        else:
            positions = tf.range(tf.shape(words)[1], dtype=tf.int64) + 0x10000 * (leaf_index + 1)
            constants = tf.bitwise.bitwise_or(
                tf.bitwise.bitwise_and(_mix(positions), 0x7FFFFFFF), 1
            )
        # Odd constants below 2**31: every product below 2**63, every sum too.
        part = tf.reduce_sum(tf.bitwise.bitwise_and(words * constants, _MASK), axis=1)
        total = part if total is None else total + part
    return _mix(tf.bitwise.bitwise_and(total, _MASK))


def _mix_numpy(x):
    """`_mix` in NumPy."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _MASK
    return x ^ (x >> 16)


def _stream_constant(stream):
    value = 0
    for part in stream:
        value = (value * 1000003 + int(part) + 1) % (2**32)
    return value


def _uniform(key, like, stream):
    """float64 uniforms in (0, 1) of `like`'s shape, from per-sample `key` and `stream`."""
    tail = like.shape[1:]
    count = int(np.prod(tail, dtype=np.int64))
    positions = tf.reshape(tf.range(count, dtype=tf.int64), [1, *tail])
    base = tf.constant(_stream_constant(stream), tf.int64)
    keys = tf.reshape(key, [-1] + [1] * len(tail))
    bits = _mix(tf.bitwise.bitwise_xor(_mix(keys + base), _mix(positions)))
    return (tf.cast(bits, tf.float64) + 0.5) / 2.0**32
