"""Arrays, tensors and DataFrames: checked once, cut into tensor batches once."""

from __future__ import annotations

import collections.abc
import numbers

import numpy as np
import tensorflow as tf

from ._nests import PARTS, inputs_by_name, labelled, same_structure


class ArrayReader:
    """Arrays (all of the data, or this rank's shard), as tensor batches built once."""

    def __init__(self, parts, batch_size, rank, size):
        parts = [(name, _arrays(part, name)) for name, part in zip(PARTS, parts, strict=False)]
        parts = [(name, part) for name, part in parts if part is not None]
        lengths = [(name, _length(part, name)) for name, part in parts]
        for name, n in lengths[1:]:
            if n != lengths[0][1]:
                raise ValueError(
                    f"`x` and `{name}` must have the same number of samples; "
                    f"got {lengths[0][1]} and {n}."
                )
        if len(parts) == 3 and not _is_leaf(parts[2][1]):
            same_structure(parts[1][1], parts[2][1], "sample_weight", "`y`")
        start, stop = _shard_bounds(lengths[0][1], size, rank)
        shards = []
        for name, part in parts:
            part = tf.nest.map_structure(lambda a, s=start, e=stop: a[s:e], part)
            for label, array in labelled(part, name):
                _check_values(array, label, name, offset=start)
            shards.append(_weights(part) if name == "sample_weight" else part)
        self.n_local = stop - start
        self.signature = tuple(tf.nest.map_structure(_array_spec, part) for part in shards)
        step = batch_size or max(self.n_local, 1)
        self._batches = [
            tuple(
                tf.nest.map_structure(lambda a, s=first: tf.constant(a[s : s + step]), part)
                for part in shards
            )
            for first in range(0, self.n_local, step)
        ]
        self.n_batches = len(self._batches)

    def __iter__(self):
        return iter(self._batches)


def _arrays(value, name):
    """`value` as a nest of numpy arrays; a list of numbers is one array, as in Keras."""
    if value is None:
        return None
    if isinstance(value, collections.abc.Mapping):
        return {key: _arrays(item, f"{name}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not _numbers_only(value):
        return type(value)(_arrays(item, f"{name}[{i}]") for i, item in enumerate(value))
    return _as_array(value, name)


def _numbers_only(value):
    return all(
        isinstance(leaf, (numbers.Number, str, bytes, np.generic))
        for leaf in tf.nest.flatten(value)
    )


def _as_array(value, name):
    array = np.asarray(value)
    if array.dtype.kind in "fiubUS" or (
        array.dtype.kind == "O" and all(isinstance(v, (str, bytes)) for v in array.flat)
    ):
        return array
    raise TypeError(f"data arrays must be numeric or strings; `{name}` has dtype {array.dtype}.")


def _length(structure, name):
    """Number of samples of an array or a nest of arrays, checked consistent."""
    leaves = tf.nest.flatten(structure)
    if not leaves:
        raise ValueError(f"`{name}` must be an array or a nest of arrays; got an empty structure.")
    lengths = set()
    for leaf in leaves:
        if leaf.ndim == 0:
            raise ValueError(
                f"`{name}` must have a leading sample dimension; "
                f"got a scalar of shape {leaf.shape}."
            )
        lengths.add(leaf.shape[0])
    if len(lengths) != 1:
        raise ValueError(
            f"the arrays in `{name}` have different numbers of samples: {sorted(lengths)}."
        )
    return lengths.pop()


def _check_values(array, label, name, offset):
    """Refuse non-finite floats (they would surface as NaN products, far from here)."""
    if array.dtype.kind in "USO" and name == "sample_weight":
        raise TypeError(f"`{label}` must be numeric; got dtype {array.dtype}.")
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
        raise ValueError(
            f"`{label}` has non-finite values (NaN or inf), first at sample "
            f"{offset + int(np.argmax(bad))}."
        )


def _weights(part):
    """Sample weights as floats (Keras multiplies losses by them)."""
    return tf.nest.map_structure(lambda a: a if a.dtype.kind == "f" else a.astype(np.float64), part)


def _array_spec(array):
    dtype = tf.string if array.dtype.kind in "USO" else tf.as_dtype(array.dtype)
    return tf.TensorSpec(shape=(None, *array.shape[1:]), dtype=dtype)


def _shard_bounds(n, size, rank):
    """Start and stop of `rank`'s ``np.array_split`` shard of `n` samples."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def from_frame(frame, inputs):
    """A DataFrame as Keras would feed it: columns by input name, else one array."""
    by_name = inputs_by_name(inputs)
    named = isinstance(inputs, collections.abc.Mapping) or len(by_name) > 1
    if named and by_name and all(name in frame.columns for name in by_name):
        return {name: _column(frame[name].to_numpy(), t) for name, t in by_name.items()}
    return frame.to_numpy()


def _column(values, tensor):
    # One column is (N,); an input of shape (None, 1) wants (N, 1).
    return values[:, None] if len(tensor.shape) == 2 and tensor.shape[1] == 1 else values


def _is_leaf(structure):
    return not isinstance(structure, (collections.abc.Mapping, list, tuple))
