"""Nests, tensor specs and model inputs, shared by the data readers.

Every batch is a tuple of parts (`PARTS`), each a nest of tensors; labels such
as ``x['a']`` name a leaf in error messages, in ``tf.nest.flatten`` order.
"""

from __future__ import annotations

import collections.abc

import tensorflow as tf

PARTS = ("x", "y", "sample_weight")


def check_part_count(count, what):
    if not 1 <= count <= 3:
        raise ValueError(
            f"{what} must be `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`; "
            f"got a tuple of {count}."
        )


def labelled(structure, name):
    """``(label, leaf)`` pairs in ``tf.nest.flatten`` order, labels such as ``x['a']``."""
    if isinstance(structure, collections.abc.Mapping):
        return [
            pair
            for key in sorted(structure)
            for pair in labelled(structure[key], f"{name}[{key!r}]")
        ]
    if isinstance(structure, (list, tuple)):
        return [pair for i, item in enumerate(structure) for pair in labelled(item, f"{name}[{i}]")]
    return [(name, structure)]


def labelled_parts(parts):
    return [pair for name, part in zip(PARTS, parts, strict=False) for pair in labelled(part, name)]


def same_structure(first, second, name, other):
    try:
        tf.nest.assert_same_structure(first, second)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{name}` must be one array or a nest matching {other}: {exc}") from None


def batch_length(batch, where="a batch"):
    lengths = {int(tf.shape(leaf)[0]) for leaf in tf.nest.flatten(batch)}
    if len(lengths) != 1:
        raise ValueError(f"{where} has parts of different lengths: {sorted(lengths)}.")
    return lengths.pop()


def relax(structure, what):
    """`structure`'s specs with an unknown batch dimension, so no batch size is traced in."""

    def relax_leaf(spec):
        if not isinstance(spec, tf.TensorSpec):
            raise TypeError(f"{what} must be dense tensors; got {spec}.")
        if spec.shape.rank is None or spec.shape.rank == 0:
            raise ValueError(f"{what} need a leading batch dimension; got shape {spec.shape}.")
        return tf.TensorSpec((None, *spec.shape[1:]), spec.dtype)

    return tf.nest.map_structure(relax_leaf, structure)


def merge(first, second, where):
    """The most specific signature of both; dims that differ become None."""
    try:
        tf.nest.assert_same_structure(first, second)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} is not structured as the batches before it: {exc}") from None

    def merge_leaf(a, b):
        if a.dtype != b.dtype or a.shape.rank != b.shape.rank:
            raise ValueError(f"{where} holds {b}, where earlier batches held {a}.")
        return tf.TensorSpec(
            [p if p == q else None for p, q in zip(a.shape, b.shape, strict=True)], a.dtype
        )

    return tf.nest.map_structure(merge_leaf, first, second)


def model_inputs(model):
    """The model's input structure of KerasTensors, or None when it has none."""
    if model is None:
        return None
    try:
        structure = model.input  # functional models: the structure they were built with
    except (AttributeError, ValueError):
        structure = getattr(model, "inputs", None)
    leaves = tf.nest.flatten(structure) if structure is not None else []
    if not leaves or not all(hasattr(t, "shape") and hasattr(t, "dtype") for t in leaves):
        return None
    return structure


def inputs_by_name(inputs):
    if inputs is None:
        return {}
    if isinstance(inputs, collections.abc.Mapping):
        return dict(inputs)
    return {t.name: t for t in tf.nest.flatten(inputs)}


def paired_inputs(x, inputs):
    """``(label, leaf, model input)`` for the leaves of `x` that pair with an input."""
    if inputs is None:
        return []
    if isinstance(x, collections.abc.Mapping):
        by_name = inputs_by_name(inputs)
        return [(f"x[{k!r}]", x[k], by_name[k]) for k in sorted(x) if k in by_name]
    leaves, flat = labelled(x, "x"), tf.nest.flatten(inputs)
    if len(leaves) != len(flat):
        return []
    return [(label, leaf, t) for (label, leaf), t in zip(leaves, flat, strict=True)]


def check_strings(x_signature, inputs):
    for label, spec, tensor in paired_inputs(x_signature, inputs):
        if spec.dtype == tf.string and tensor.dtype != "string":
            raise TypeError(
                f"`{label}` holds strings, but the model input {tensor.name!r} expects "
                f"{tensor.dtype}; encode them first (e.g. keras.layers.StringLookup) or "
                "give the model a string input."
            )
