"""The objective Keras trains, split exactly into per-batch contributions.

`model.fit` minimises ``model.compute_loss(x, y, model(x), sample_weight)``:
the compiled loss of each output (unreduced per-sample values, weighted by
sample weights and masks, reduced, times its ``loss_weights``) plus
``model.losses`` (weight and activity regularizers, ``add_loss``). Evaluated
on all the data as one batch, each reduced term is a ratio

    sum over samples of (loss * weight)  /  a parameter-independent divisor

(the divisor is 1, the element count, the unmasked count or the sum of the
sample weights, depending on the reduction). A batch therefore contributes
its numerator divided by the *global* divisor, which is summed over all
batches and ranks once, at construction, by one forward pass.

Terms that are one scalar per batch (``model.losses`` entries, a loss whose
``call`` returns a scalar, an overridden ``compute_loss``) are probed at
construction on two groupings of the first samples: a term that behaves as
a mean over samples contributes ``batch_size / N`` times its batch value,
one that behaves as a sum contributes its batch value. Anything else (batch
statistics in training mode, a Dice loss) cannot be split into batches
exactly; splitting is then refused unless the caller opts in.

The compiled loss's per-output shares are in `_compiled_loss`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from . import _mpi
from ._compiled_loss import CompiledLossShares
from ._keras import exact_moments

__all__ = ["KerasObjective"]

# Samples of the additivity probe: two groups of half this many.
_PROBE_SAMPLES = 8
_MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


class KerasObjective:
    """One batch's exact share of the objective Keras trains, on all the data.

    Collective over `comm` at construction, which makes one forward pass
    over the data (sample count and divisors) and, when the data is split
    into several batches, forward passes on two groupings of the first
    samples (the additivity probe).

    Parameters
    ----------
    model : keras.Model
    loss : None, str, keras.losses.Loss, callable or nest of them
        None: the compiled loss and loss weights of `model` (or its
        overridden ``compute_loss``); otherwise it replaces the compiled
        loss, as ``model.compile(loss=loss)`` would.
    source : DataSource
        This rank's batches.
    training : bool
        Passed to the model call.
    model_losses : bool
        Include ``model.losses`` (weight and activity regularizers, ``add_loss``).
    allow_batch_dependence : bool
        Accept an objective that changes when the data is split into batches.
    comm : mpi4py communicator or None

    Attributes
    ----------
    n_global : int
        Samples over all batches and ranks.
    """

    def __init__(
        self, model, loss, source, *, training, model_losses, allow_batch_dependence, comm
    ):
        self._model = model
        self._source = source
        self._training = bool(training)
        self._model_losses = bool(model_losses)
        self._allow = bool(allow_batch_dependence)
        self._comm = comm
        _warn_mixed_precision(model)
        self._override = loss is None and _overrides_compute_loss(model)
        user_loss, user_weights = (None, None) if self._override else _user_loss(model, loss)
        # Everything up to the first collective sum runs on local data only: run
        # it inside one, so that a failure on one rank raises on every rank.
        shares, self._raw = _together(lambda: self._prepare(user_loss, user_weights), comm)
        self._raw_function = tf.function(self._raw_terms, input_signature=source.signature)
        totals = self._construction_pass()
        self.n_global = round(totals[0])
        self._laws = self._probe_laws()
        self._shares = shares(divisors=totals[1:], layout=self._raw, weight=self._output_weight)

    def _prepare(self, user_loss, user_weights):
        """Checks and a first eager call on local data: (shares factory, recording shares)."""
        source = self._source
        if user_loss is not None and not source.has_y:
            raise ValueError(
                "`y` is needed by the loss, but the data has no targets: pass `y`, or a "
                "dataset yielding (x, y) or (x, y, sample_weight) tuples."
            )
        _check_labels(source)
        x, y, _ = self._unpack(source.head(2))
        predictions = self._model(x, training=False)
        self._dtype = _compute_dtype(predictions)
        shares = functools.partial(
            CompiledLossShares,
            self._model,
            user_loss,
            user_weights,
            y,
            predictions,
            dtype=self._dtype,
        )
        return shares, shares()

    # ------------------------------------------------------------- evaluation

    def contribution(self, *batch):
        """This batch's share of the objective: a scalar in the compute dtype."""
        x, y, weights, predictions = self._call_model(batch)
        total = self.output_term(x, y, weights, predictions)
        for term in self.other_terms(x, y, weights, predictions):
            total += term
        return total

    def output_term(self, x, y, weights, predictions):
        """The compiled loss's share: the part that is a function of the model's outputs.

        The loss-output split of the curvature operators (GGN, Fisher): with
        ``self._shares.hook`` set, each output's loss sees its inputs
        through the hook.
        """
        self._shares.start(tf.cast(_batch_size(x), self._dtype))
        total = tf.zeros((), self._dtype)
        if self._shares.compile_loss is not None:
            total += self._cast(self._shares.compile_loss(y, predictions, weights))
        return total

    def other_terms(self, x, y, weights, predictions):
        """The weighted batch-level terms: ``model.losses`` or the overridden ``compute_loss``."""
        size = tf.cast(_batch_size(x), self._dtype)
        extra = self._extra_terms(x, y, weights, predictions)
        laws = self._laws[len(self._raw.scalar_outputs) :]
        return [self.weight(law, size) * term for term, law in zip(extra, laws, strict=True)]

    def _output_weight(self, position, size):
        """The factor of the `position`-th batch-level output loss."""
        return self.weight(self._laws[position], size)

    def weight(self, law, size):
        """A batch-level term's factor: its share of the samples for a mean, 1 for a sum."""
        if law == "sum":
            return tf.ones((), self._dtype)
        return size / tf.constant(float(self.n_global), self._dtype)

    def _unpack(self, batch):
        batch = list(batch)
        x = batch.pop(0)
        y = batch.pop(0) if self._source.has_y else None
        weights = batch.pop(0) if self._source.has_sample_weight else None
        return x, y, weights

    def _call_model(self, batch):
        x, y, weights = self._unpack(batch)
        with exact_moments():
            predictions = self._model(x, training=self._training)
        return x, y, weights, predictions

    def _cast(self, value):
        return tf.cast(tf.convert_to_tensor(value), self._dtype)

    def _extra_terms(self, x, y, weights, predictions):
        """Batch-level scalars beyond the compiled loss: ``model.losses`` or the override."""
        if self._override:
            value = _call_compute_loss(self._model, x, y, predictions, weights, self._training)
            return [tf.reduce_sum(self._cast(value))]
        if not self._model_losses:
            return []
        return [tf.reduce_sum(self._cast(term)) for term in self._model.losses]

    def _raw_terms(self, *batch):
        """[batch size, divisors, numerators, batch-level scalars], float64."""
        x, y, weights, predictions = self._call_model(batch)
        self._raw.start(None)
        if self._raw.compile_loss is not None:
            self._raw.compile_loss(y, predictions, weights)
        extra = self._extra_terms(x, y, weights, predictions)
        self._extra_names = _extra_names(self._override, len(extra))
        values = [_batch_size(x), *self._raw.divisors, *self._raw.numerators]
        values += [*self._raw.scalars, *extra]
        return tf.stack([tf.cast(v, tf.float64) for v in values])

    # ----------------------------------------------------------- construction

    def _construction_pass(self):
        """Sample count and divisors summed over all batches and ranks."""
        concrete = self._raw_function.get_concrete_function()
        width = 1 + len(self._raw.per_sample)

        def compute():
            total = np.zeros(width)
            with _restored(self._model):
                for batch in self._source:
                    total += concrete(*batch).numpy()[:width]
            return total

        try:
            totals = _mpi.collective_sum(compute, (width,), self._comm)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
            # TensorFlow's op errors cannot be rebuilt from a message alone
            # (they take a node and an op): a kernel's refusal is a ValueError.
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(
                f"evaluating the objective on the data (`x`, `y`, `sample_weight`) failed: {exc}"
            ) from exc
        if width == 1 and not self._raw.scalars and not self._extra_names:
            raise ValueError(
                "the objective has no terms: `model` has no compiled loss and no "
                "`model.losses`; pass `loss=` or compile the model with a loss."
            )
        return totals

    def _probe_laws(self):
        """How each batch-level term combines over batches; refuse what cannot be split."""
        n_laws = len(self._raw.scalars) + len(self._extra_names)
        batches = _mpi.collective_sum(lambda: np.array([len(self._source)]), (1,), self._comm)
        if int(batches[0]) <= 1:
            # One batch on one rank: every term is evaluated on all the data at once.
            return ["mean"] * n_laws
        probe = _together(self._local_probe, self._comm)
        votes = [v for v in _mpi.allgather_object(probe, self._comm) if v]
        if not votes:
            if not n_laws and not self._training:
                # Per-sample losses of an inference-mode model: nothing to check.
                return []
            problem = "no rank holds two samples with which to check it"
        else:
            problem = next((v["problem"] for v in votes if v["problem"]), None)
            if problem is None and any(v["laws"] != votes[0]["laws"] for v in votes):
                problem = "the ranks' data disagree on how the loss terms combine"
        if problem is None:
            return votes[0]["laws"]
        if self._allow:
            return ["mean"] * n_laws
        raise ValueError(
            "`batch_size` (or `comm`) splits the data into batches, but the objective is "
            f"not a sum over samples: {problem}. Its Hessian would change with the "
            "batching. Use batch_size=None on one process, or pass "
            "allow_batch_dependence=True to take the sum of the batches' objectives "
            "(mean-like terms weighted by each batch's share of the samples)."
        )

    def _local_probe(self):
        """Evaluate the terms on two halves of the first samples and on both together."""
        head = self._source.head(_PROBE_SAMPLES)
        size = int(_batch_size(head[0]))
        if size < 2:
            return None
        half = size // 2
        concrete = self._raw_function.get_concrete_function()
        groups = [_slice(head, 0, half), _slice(head, half, size), head]
        with _restored(self._model):
            first, second, both = (concrete(*group).numpy() for group in groups)
        return self._compare(first, second, both)

    def _compare(self, first, second, both):
        """The laws of the batch-level terms, or the first problem found."""
        tolerance = np.finfo(self._dtype.as_numpy_dtype).eps ** 0.5
        k = len(self._raw.per_sample)
        for i in range(k):
            j = 1 + k + i
            if not _close(first[j] + second[j], both[j], tolerance):
                name = self._raw.outputs[self._raw.per_sample[i]]
                return {"problem": _per_sample_problem(self._model, name, self._training)}
        laws = []
        names = [self._raw.outputs[i] for i in self._raw.scalar_outputs] + self._extra_names
        sizes = first[0], second[0], both[0]
        for offset, name in enumerate(names):
            j = 1 + 2 * k + offset
            mean = (sizes[0] * first[j] + sizes[1] * second[j]) / sizes[2]
            if _close(mean, both[j], tolerance):
                laws.append("mean")
            elif _close(first[j] + second[j], both[j], tolerance):
                laws.append("sum")
            else:
                return {"problem": f"{name} is neither a mean nor a sum over samples"}
        return {"problem": None, "laws": laws}


# ---------------------------------------------------------------- helpers


def _batch_size(x):
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _slice(batch, start, stop):
    return tuple(tf.nest.map_structure(lambda t: t[start:stop], part) for part in batch)


def _close(a, b, tolerance):
    return abs(a - b) <= tolerance * max(abs(a), abs(b), np.finfo(float).tiny)


def _extra_names(override, count):
    if override:
        return ["the overridden `compute_loss`"]
    return [f"`model.losses[{k}]` (a regularizer or an `add_loss` term)" for k in range(count)]


def _per_sample_problem(model, name, training):
    statistics = [
        layer.name
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    cause = f"{name} changes with the other samples of its batch"
    if training and statistics:
        cause += f" (BatchNormalization {statistics} in training mode uses batch statistics)"
    return cause


def _compute_dtype(predictions):
    """float64 if the model computes in it (or floatx is float64), else float32."""
    wide = keras.config.floatx() == "float64" or any(
        t.dtype == tf.float64 for t in tf.nest.flatten(predictions)
    )
    return tf.float64 if wide else tf.float32


def _user_loss(model, loss):
    """(loss, loss_weights) for a CompileLoss: the given loss or the compiled one."""
    if loss is not None:
        for leaf in tf.nest.flatten(loss):
            _check_loss(leaf)
        return loss, None
    compiled = getattr(model, "_compile_loss", None)
    if compiled is None:
        if not getattr(model, "compiled", False):
            raise ValueError(
                "`loss` is None but `model` is not compiled: pass `loss=` (a Keras loss "
                "name, a keras.losses.Loss or a callable) or call model.compile(loss=...)."
            )
        return None, None
    return compiled._user_loss, compiled._user_loss_weights


def _check_loss(loss):
    if isinstance(loss, str):
        try:
            keras.losses.get(loss)
        except (ValueError, TypeError):
            raise ValueError(f"`loss` {loss!r} is not a Keras loss name.") from None
    elif not callable(loss):
        raise TypeError(
            "`loss` must be a Keras loss name, a keras.losses.Loss or a callable "
            "loss(y_true, y_pred) returning per-sample losses (or a nest of them, one per "
            f"output); got {type(loss).__name__}."
        )


def _overrides_compute_loss(model):
    """True if a class outside Keras defines `model`'s compute_loss."""
    for cls in type(model).__mro__:
        if "compute_loss" in vars(cls):
            return not cls.__module__.startswith("keras.")
    return False


def _call_compute_loss(model, x, y, predictions, weights, training):
    parameters = inspect.signature(model.compute_loss).parameters
    if "training" in parameters:
        return model.compute_loss(x, y, predictions, weights, training=training)
    return model.compute_loss(x, y, predictions, weights)


def _check_labels(source):
    if not source.has_y:
        return
    for spec in tf.nest.flatten(source.signature[1]):
        if spec.dtype == tf.string:
            raise TypeError(
                "`y` holds strings; Keras losses need numeric targets (integer class "
                "indices or floating-point values)."
            )


def _warn_mixed_precision(model):
    policy = getattr(getattr(model, "dtype_policy", None), "name", None)
    if policy in _MIXED_POLICIES:
        warnings.warn(
            f"`model` computes under the {policy!r} dtype policy: its Hessian is accurate "
            "to about 1e-3 relative only. Use float64 layers for tight tolerances.",
            UserWarning,
            stacklevel=4,
        )


@contextlib.contextmanager
def _restored(model):
    """Restore the model's non-trainable state (BatchNorm statistics, seeds) on exit."""
    variables = list(model.non_trainable_variables)
    saved = [np.array(v.numpy()) for v in variables]
    try:
        yield
    finally:
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)


def _together(function, comm):
    """``function()``, run so that an exception on one rank raises on every rank.

    Collective over `comm`.
    """
    result = []
    _mpi.collective_sum(lambda: result.append(function()) or np.zeros(1), (1,), comm)
    return result[0]
