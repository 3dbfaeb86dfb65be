"""Datasets, streamed: a ``tf.data.Dataset`` and a ``keras.utils.PyDataset``.

Neither is ever held in memory beyond the batch being read. Both are read
once at construction, to count their samples, check their values and learn
their signature, and on every pass after that.
"""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from ._nests import (
    PARTS,
    batch_length,
    check_part_count,
    labelled_parts,
    merge,
    paired_inputs,
    relax,
)

# Keras' own default for data that is not batched yet.
KERAS_BATCH_SIZE = 32

CHANGING = (
    "`x` gives different batches on each pass, but the Hessian must read the same data "
    "on every product: give `shuffle()` `reshuffle_each_iteration=False` (and a `seed` "
    "under MPI), and leave random augmentation out."
)


class DatasetReader:
    """A ``tf.data.Dataset``, batched and sharded, streamed on every pass."""

    def __init__(self, dataset, batch_size, inputs, rank, size):
        if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "`x` is an infinite tf.data.Dataset (`repeat()` without a count?); "
                "give a finite one, e.g. `dataset.take(n)` or `dataset.repeat(count)`."
            )
        spec = dataset.element_spec
        if not isinstance(spec, tuple):
            dataset, spec = dataset.map(lambda x: (x,)), (spec,)
        check_part_count(len(spec), "`x`'s elements")
        if not _is_batched(spec[0], inputs):
            dataset = dataset.batch(batch_size or KERAS_BATCH_SIZE)
        elif batch_size is not None:
            dataset = dataset.rebatch(batch_size)
        if len(spec) == 3:
            dataset = dataset.map(lambda x, y, sw: (x, y, _tensor_weights(sw)))
        self.signature = tuple(
            relax(part, f"`x`'s {name}")
            for name, part in zip(PARTS, dataset.element_spec, strict=False)
        )
        # tf.data's shard() reads every batch anyway: count them all, to learn
        # which are ours and to check that the ranks read the same batches.
        self.n_local, self.n_batches, self.digest = _count(dataset, self.signature, rank, size)
        self._dataset = dataset.shard(size, rank) if size > 1 else dataset

    def __iter__(self):
        return iter(self._dataset)


def _is_batched(x_spec, inputs):
    """Whether dataset elements already are batches, from the model's input ranks."""
    paired = paired_inputs(x_spec, inputs)
    ranks = [(spec.shape.rank, len(t.shape)) for _, spec, t in paired]
    if ranks and all(r == n for r, n in ranks):
        return True
    if ranks and all(r == n - 1 for r, n in ranks):
        return False
    # Nothing to compare with: batched, as Keras takes a dataset, unless scalars.
    return all(spec.shape.rank != 0 for spec in tf.nest.flatten(x_spec))


def _tensor_weights(part):
    def as_float(t):
        if t.dtype == tf.string:
            raise TypeError(f"`sample_weight` must be numeric; got dtype {t.dtype.name}.")
        return t if t.dtype.is_floating else tf.cast(t, tf.float64)

    return tf.nest.map_structure(as_float, part)


def _summary(*parts):
    """Per batch and leaf: the length, whether it is finite, and a checksum."""
    leaves = tf.nest.flatten(parts)
    sizes = tf.stack([tf.shape(leaf, out_type=tf.int64)[0] for leaf in leaves])
    finite = [tf.reduce_all(tf.math.is_finite(t)) if t.dtype.is_floating else True for t in leaves]
    return sizes, tf.stack(finite), tf.stack([_checksum(t) for t in leaves])


def _checksum(leaf):
    """The sum of the leaf's bits read as integers: exact, whatever the order of summation."""
    if leaf.dtype == tf.string:
        leaf = tf.strings.to_hash_bucket_fast(leaf, 2**31 - 1)
    elif leaf.dtype.size >= 4:
        leaf = tf.bitcast(leaf, tf.int32)
    elif leaf.dtype.is_floating:
        leaf = tf.bitcast(leaf, tf.int16)
    return tf.reduce_sum(tf.cast(leaf, tf.int64))


def _count(dataset, signature, rank, size):
    """This rank's samples and batches, and a digest of all batches, from one pass."""
    labels = [label for label, _ in labelled_parts(signature)]
    summaries = dataset.map(_summary)
    samples = batches = 0
    checksums = []
    for index, (sizes, finite, checksum) in enumerate(summaries.as_numpy_iterator()):
        where = f"batch {index} of the dataset `x`"
        if len(set(sizes.tolist())) != 1:
            raise ValueError(
                f"{where} has parts of different lengths: {sizes.tolist()} (elements "
                "are taken as batches unless `model` inputs show they are samples)."
            )
        if not finite.all():
            bad = labels[int(np.argmin(finite))]
            raise ValueError(f"{where} has non-finite values (NaN or inf) in `{bad}`.")
        checksums.append(checksum.tolist())
        if index % size == rank:
            samples += int(sizes[0])
            batches += 1
    again = next(summaries.as_numpy_iterator(), None)
    if checksums and (again is None or again[2].tolist() != checksums[0]):
        raise ValueError(CHANGING)
    return samples, batches, hashlib.sha256(np.array(checksums, np.int64).tobytes()).hexdigest()


class PyDatasetReader:
    """A ``keras.utils.PyDataset``: ``len(ds)`` batches, ``ds[i]`` read on demand."""

    def __init__(self, dataset, rank, size):
        count = dataset.num_batches
        if count is None:
            raise ValueError("`x` is an infinite PyDataset (`num_batches` is None).")
        self._dataset = dataset
        self._indices = range(rank, count, size)
        self.n_batches = len(self._indices)
        self.signature, self.n_local, first = None, 0, None
        for index in self._indices:
            batch = self._read(index)
            self._check(batch, f"batch {index} of the PyDataset `x`")
            first = batch if first is None else first
        if first is not None and not _equal(first, self._read(rank)):
            raise ValueError(CHANGING)

    def _check(self, batch, where):
        """Count `batch`, and check it is finite and is like the batches before it."""
        spec = tuple(tf.nest.map_structure(tf.TensorSpec.from_tensor, batch))
        spec = relax(spec, where)
        self.signature = spec if self.signature is None else merge(self.signature, spec, where)
        self.n_local += batch_length(batch, where)
        for label, leaf in labelled_parts(batch):
            if leaf.dtype.is_floating and not tf.reduce_all(tf.math.is_finite(leaf)):
                raise ValueError(f"{where} has non-finite values (NaN or inf) in `{label}`.")

    def _read(self, index):
        element = self._dataset[index]
        # Keras reads a list element as a tuple of parts too.
        parts = tuple(element) if isinstance(element, (list, tuple)) else (element,)
        check_part_count(len(parts), f"batch {index} of the PyDataset `x`")
        parts = tuple(tf.nest.map_structure(tf.convert_to_tensor, part) for part in parts)
        return (*parts[:2], _tensor_weights(parts[2])) if len(parts) == 3 else parts

    def __iter__(self):
        for index in self._indices:
            yield self._read(index)


def _equal(first, second):
    pairs = zip(tf.nest.flatten(first), tf.nest.flatten(second), strict=True)
    return all(np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)
