"""Data for `Hessian.from_keras`: this rank's shard, cut into batches.

The arrays are converted to tensors once, at construction, and every batch
is described by one ``tf.TensorSpec`` nest with a ``None`` batch dimension, so
that an uneven last batch (or an uneven shard) never retraces a function.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from . import _mpi


def _leaves(structure):
    return tf.nest.flatten(structure)


def _length(structure, name):
    """Number of samples of an array or a nest of arrays, checked consistent."""
    leaves = _leaves(structure)
    if not leaves:
        raise ValueError(f"`{name}` must be an array or a nest of arrays; got an empty structure.")
    lengths = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"`{name}` must have a leading sample dimension; got a scalar of shape {shape}."
            )
        lengths.add(shape[0])
    if len(lengths) != 1:
        raise ValueError(
            f"the arrays in `{name}` have different numbers of samples: {sorted(lengths)}."
        )
    return lengths.pop()


def _as_array(leaf):
    array = np.asarray(leaf)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"data arrays must be numeric; got dtype {array.dtype}.")
    return array


def _spec(array):
    return tf.TensorSpec(shape=(None, *array.shape[1:]), dtype=tf.as_dtype(array.dtype))


class DataBatches:
    """This rank's samples of ``(x, y)``, as a list of tensor batches.

    Parameters
    ----------
    x, y : array_like or nest of array_like
        Inputs and targets, with the samples along the first axis.
    batch_size : int or None
        Samples per batch; None puts all local samples in one batch.
    comm : mpi4py communicator or None
    shard : bool
        With a communicator: True if `x`, `y` are the full data (the same on
        every rank), of which this rank keeps its ``np.array_split`` shard;
        False if they already are this rank's shard.

    Attributes
    ----------
    batches : list of tuple
        ``(x_batch, y_batch)`` tensor nests.
    signature : tuple
        ``(x_spec, y_spec)``, nests of ``tf.TensorSpec`` with a None batch dimension.
    n_local, n_global : int
        Samples held here, and over all ranks.
    """

    def __init__(self, x, y, *, batch_size=None, comm=None, shard=True):
        x = tf.nest.map_structure(_as_array, x)
        y = tf.nest.map_structure(_as_array, y)
        n_x, n_y = _length(x, "x"), _length(y, "y")
        if n_x != n_y:
            raise ValueError(
                f"`x` and `y` must have the same number of samples; got {n_x} and {n_y}."
            )
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
                raise TypeError(
                    f"`batch_size` must be a positive integer or None; got {batch_size!r}."
                )
            if batch_size <= 0:
                raise ValueError(
                    f"`batch_size` must be a positive integer or None; got {batch_size}."
                )
        if comm is not None and shard:
            start, stop = _shard_bounds(n_x, _mpi.size(comm), _mpi.rank(comm))
            x = tf.nest.map_structure(lambda a: a[start:stop], x)
            y = tf.nest.map_structure(lambda a: a[start:stop], y)
            n_x = stop - start
        self.n_local = int(n_x)
        self.n_global = int(self.n_local if comm is None else comm.allreduce(self.n_local))
        _mpi.agree(self.n_global > 0, "`x` and `y` hold no samples on any rank.", comm)
        self.signature = (tf.nest.map_structure(_spec, x), tf.nest.map_structure(_spec, y))
        step = batch_size or max(self.n_local, 1)
        self.batches = [
            (
                tf.nest.map_structure(lambda a, s=start: tf.constant(a[s : s + step]), x),
                tf.nest.map_structure(lambda a, s=start: tf.constant(a[s : s + step]), y),
            )
            for start in range(0, self.n_local, step)
        ]


def _shard_bounds(n, size, rank):
    """Start and stop of `rank`'s ``np.array_split`` shard of `n` samples."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
