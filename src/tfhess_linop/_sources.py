"""Data sources: this rank's share of the data, as a re-iterable stream of batches.

`DataSource` takes what Keras' ``fit`` takes (arrays, tensors and nests of
them, a pandas DataFrame, a finite ``tf.data.Dataset``, a
``keras.utils.PyDataset``) and yields batches ``(x,)``, ``(x, y)`` or
``(x, y, sample_weight)`` of tensor nests, all described by one
``tf.TensorSpec`` signature with a ``None`` batch dimension, so that an
uneven last batch (or an uneven shard) never retraces a function. Arrays are
converted to tensors once; datasets are streamed one batch at a time and read
once at construction, to count their samples and check their values.
"""

from __future__ import annotations

import collections.abc
import hashlib
import numbers

import keras
import numpy as np
import tensorflow as tf

from . import _mpi

# Keras' own default for data that is not batched yet.
KERAS_BATCH_SIZE = 32
_PARTS = ("x", "y", "sample_weight")
_STREAMED = ("tf.data.Dataset", "PyDataset")


class DataSource:
    """This rank's share of the data as a re-iterable stream of batches.

    Parameters
    ----------
    x : array_like, nest of array_like, DataFrame, tf.data.Dataset or keras.utils.PyDataset
        Inputs, samples along the first axis: arrays or tensors, or nests of
        them (a dict for named inputs, a list or tuple); a pandas DataFrame
        (a dict of columns when the model's inputs are named after columns,
        else one 2-D array); or a finite dataset whose elements are ``x``,
        ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``.
    y : array_like or nest of array_like, optional
        Targets; None for a loss that needs none. Not with a dataset.
    sample_weight : array_like or nest of array_like, optional
        Per-sample weights, shape ``(N,)`` or ``(N, ...)``, or a nest
        matching `y` (one per output). Needs `y`; not with a dataset.
    batch_size : int, optional
        Samples per batch. Arrays: None puts all local samples in one batch.
        A dataset that is not batched yet is batched by `batch_size`
        (default 32, as in Keras); a batched one is rebatched if it is given.
    comm : mpi4py communicator, optional
        Construction is collective over `comm`.
    shard : bool, default: True
        With `comm`: the data are the same on every rank and each rank keeps
        its share. Arrays: rank r keeps the r-th ``numpy.array_split`` part.
        Datasets: rank r keeps batches r, r + P, r + 2P, ... of P ranks
        (uneven batch counts are fine: the sample count is global). Every
        rank still reads a ``tf.data.Dataset`` whole; shard it yourself
        early in the pipeline and pass ``shard=False`` to avoid that. False:
        the data already are this rank's.
    model : keras.Model, optional
        Its inputs decide whether a dataset is batched (by comparing ranks),
        which DataFrame columns are which inputs, and whether strings are
        allowed in `x`.

    Attributes
    ----------
    signature : tuple
        ``(x_spec,)``, ``(x_spec, y_spec)`` or ``(x_spec, y_spec, sw_spec)``,
        nests of ``tf.TensorSpec`` with a None batch dimension.
    has_y, has_sample_weight : bool
    n_local, n_global : int
        Samples on this rank, and on all ranks.
    kind : str
        "arrays", "DataFrame", "tf.data.Dataset" or "PyDataset".

    Notes
    -----
    A dataset must give the same batches on every pass (and, sharded, on
    every rank): reshuffling on each iteration changes the batches between
    two products and, sharded, makes ranks skip or repeat samples. Without
    `model` inputs to compare with, a ``tf.data.Dataset`` counts as batched
    when the leading dimension of its ``x`` is unknown, as ``batch()``
    leaves it. Integer or boolean sample weights become float64; nothing
    else is cast.
    """

    def __init__(
        self, x, y=None, sample_weight=None, *, batch_size=None, comm=None, shard=True, model=None
    ):
        comm = _mpi.resolve_comm(comm)
        if x is None:
            raise ValueError("`x` must be given: arrays, a DataFrame or a dataset.")
        _check_batch_size(batch_size)
        self.kind = _kind(x)
        if self.kind in _STREAMED:
            for name, value in (("y", y), ("sample_weight", sample_weight)):
                if value is not None:
                    raise ValueError(
                        f"`{name}` cannot be given with a {self.kind} `x`: the dataset "
                        "yields it, as elements `(x, y)` or `(x, y, sample_weight)`."
                    )
        elif sample_weight is not None and y is None:
            raise ValueError("`sample_weight` needs `y`; got `y=None`.")
        inputs = _model_inputs(model)
        rank, size = (_mpi.rank(comm), _mpi.size(comm)) if shard else (0, 1)

        def build():
            if self.kind == "tf.data.Dataset":
                reader = _DatasetReader(x, batch_size, inputs, rank, size)
            elif self.kind == "PyDataset":
                reader = _PyDatasetReader(x, rank, size)
            else:
                x_arrays = _from_frame(x, inputs) if self.kind == "DataFrame" else x
                reader = _ArrayReader((x_arrays, y, sample_weight), batch_size, rank, size)
            if reader.signature is not None:
                _check_strings(reader.signature[0], inputs)
            self._reader = reader
            return reader.n_local

        self.n_global = int(_mpi.collective_sum(build, (), comm))
        self.n_local = int(self._reader.n_local)
        if self.n_global == 0:
            raise ValueError("`x` and `y` hold no samples on any rank.")
        self.signature = _agree(self._reader, comm, compare_batches=shard)
        self.has_y = len(self.signature) > 1
        self.has_sample_weight = len(self.signature) > 2

    def __iter__(self):
        """One fresh pass over this rank's batches, tuples matching `signature`."""
        return iter(self._reader)

    def __len__(self):
        """Number of batches on this rank."""
        return self._reader.n_batches

    def head(self, m):
        """The first ``min(m, n_local)`` local samples as one batch tuple."""
        m = min(int(m), self.n_local)
        pieces, held = [], 0
        for batch in self:
            if held >= m:
                break
            pieces.append(batch)
            held += _batch_length(batch)
        if not pieces:
            return tf.nest.map_structure(_empty, self.signature)
        return tf.nest.map_structure(lambda *leaves: tf.concat(leaves, 0)[:m], *pieces)

    def __repr__(self):
        return (
            f"DataSource(kind={self.kind!r}, samples={self.n_local} of {self.n_global}, "
            f"batches={len(self)})"
        )


# ------------------------------------------------------------------ arrays


class _ArrayReader:
    """Arrays (all of the data, or this rank's shard), as tensor batches built once."""

    def __init__(self, parts, batch_size, rank, size):
        parts = [(name, _arrays(part, name)) for name, part in zip(_PARTS, parts, strict=False)]
        parts = [(name, part) for name, part in parts if part is not None]
        lengths = [(name, _length(part, name)) for name, part in parts]
        for name, n in lengths[1:]:
            if n != lengths[0][1]:
                raise ValueError(
                    f"`x` and `{name}` must have the same number of samples; "
                    f"got {lengths[0][1]} and {n}."
                )
        if len(parts) == 3 and not _is_leaf(parts[2][1]):
            _same_structure(parts[1][1], parts[2][1], "sample_weight", "`y`")
        start, stop = _shard_bounds(lengths[0][1], size, rank)
        shards = []
        for name, part in parts:
            part = tf.nest.map_structure(lambda a, s=start, e=stop: a[s:e], part)
            for label, array in _labelled(part, name):
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


def _from_frame(frame, inputs):
    """A DataFrame as Keras would feed it: columns by input name, else one array."""
    by_name = _inputs_by_name(inputs)
    named = isinstance(inputs, collections.abc.Mapping) or len(by_name) > 1
    if named and by_name and all(name in frame.columns for name in by_name):
        return {name: _column(frame[name].to_numpy(), t) for name, t in by_name.items()}
    return frame.to_numpy()


def _column(values, tensor):
    # One column is (N,); an input of shape (None, 1) wants (N, 1).
    return values[:, None] if len(tensor.shape) == 2 and tensor.shape[1] == 1 else values


# ---------------------------------------------------------------- datasets


class _DatasetReader:
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
        _check_part_count(len(spec), "`x`'s elements")
        if not _is_batched(spec[0], inputs):
            dataset = dataset.batch(batch_size or KERAS_BATCH_SIZE)
        elif batch_size is not None:
            dataset = dataset.rebatch(batch_size)
        if len(spec) == 3:
            dataset = dataset.map(lambda x, y, sw: (x, y, _tensor_weights(sw)))
        self.signature = tuple(
            _relax(part, f"`x`'s {name}")
            for name, part in zip(_PARTS, dataset.element_spec, strict=False)
        )
        # tf.data's shard() reads every batch anyway: count them all, to learn
        # which are ours and to check that the ranks read the same batches.
        self.n_local, self.n_batches, self.digest = _count(dataset, self.signature, rank, size)
        self._dataset = dataset.shard(size, rank) if size > 1 else dataset

    def __iter__(self):
        return iter(self._dataset)


def _is_batched(x_spec, inputs):
    """Whether dataset elements already are batches, from the model's input ranks."""
    pairs = _pairs(x_spec, inputs)
    ranks = [(spec.shape.rank, len(t.shape)) for _, spec, t in pairs]
    if ranks and all(r == n for r, n in ranks):
        return True
    if ranks and all(r == n - 1 for r, n in ranks):
        return False
    # No model to compare with: `batch()` leaves the batch dimension unknown.
    leaves = tf.nest.flatten(x_spec)
    return all(s.shape.rank and s.shape[0] is None for s in leaves)


def _tensor_weights(part):
    def as_float(t):
        if t.dtype == tf.string:
            raise TypeError(f"`sample_weight` must be numeric; got dtype {t.dtype.name}.")
        return t if t.dtype.is_floating else tf.cast(t, tf.float64)

    return tf.nest.map_structure(as_float, part)


def _summary(*parts):
    """Per batch and leaf: the length, whether it is finite, and a checksum (its sum)."""
    leaves = tf.nest.flatten(parts)
    sizes = tf.stack([tf.shape(leaf, out_type=tf.int64)[0] for leaf in leaves])
    finite = [tf.reduce_all(tf.math.is_finite(t)) if t.dtype.is_floating else True for t in leaves]
    hashed = [
        tf.strings.to_hash_bucket_fast(t, 2**31 - 1) if t.dtype == tf.string else t for t in leaves
    ]
    checksums = tf.stack([tf.reduce_sum(tf.cast(t, tf.float64)) for t in hashed])
    return sizes, tf.stack(finite), checksums


def _count(dataset, signature, rank, size):
    """This rank's samples and batches, and a digest of all batches, from one pass."""
    labels = [label for label, _ in _labelled_parts(signature)]
    summaries = dataset.map(_summary)
    samples = batches = 0
    checksums = []
    for index, (sizes, finite, checksum) in enumerate(summaries.as_numpy_iterator()):
        where = f"batch {index} of the dataset `x`"
        if len(set(sizes.tolist())) != 1:
            raise ValueError(f"{where} has parts of different lengths: {sizes.tolist()}.")
        if not finite.all():
            bad = labels[int(np.argmin(finite))]
            raise ValueError(f"{where} has non-finite values (NaN or inf) in `{bad}`.")
        checksums.append(_rounded(checksum))
        if index % size == rank:
            samples += int(sizes[0])
            batches += 1
    again = next(summaries.as_numpy_iterator(), None)
    if checksums and (again is None or _rounded(again[2]) != checksums[0]):
        raise ValueError(_CHANGING)
    return samples, batches, hashlib.sha256(np.array(checksums).tobytes()).hexdigest()


def _rounded(checksums):
    # To 12 digits: a sum's order of summation may differ from pass to pass.
    return [float(f"{c:.12e}") for c in checksums]


_CHANGING = (
    "`x` gives different batches on each pass, but the Hessian must read the same data "
    "on every product: give `shuffle()` `reshuffle_each_iteration=False` (and a `seed` "
    "under MPI), and leave random augmentation out."
)


class _PyDatasetReader:
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
            raise ValueError(_CHANGING)

    def _check(self, batch, where):
        """Count `batch`, and check it is finite and is like the batches before it."""
        spec = tuple(tf.nest.map_structure(tf.TensorSpec.from_tensor, batch))
        spec = _relax(spec, where)
        self.signature = spec if self.signature is None else _merge(self.signature, spec, where)
        self.n_local += _batch_length(batch, where)
        for label, leaf in _labelled_parts(batch):
            if leaf.dtype.is_floating and not tf.reduce_all(tf.math.is_finite(leaf)):
                raise ValueError(f"{where} has non-finite values (NaN or inf) in `{label}`.")

    def _read(self, index):
        element = self._dataset[index]
        # Keras reads a list element as a tuple of parts too.
        parts = tuple(element) if isinstance(element, (list, tuple)) else (element,)
        _check_part_count(len(parts), f"batch {index} of the PyDataset `x`")
        parts = tuple(tf.nest.map_structure(tf.convert_to_tensor, part) for part in parts)
        return (*parts[:2], _tensor_weights(parts[2])) if len(parts) == 3 else parts

    def __iter__(self):
        for index in self._indices:
            yield self._read(index)


# ------------------------------------------------------------------ common


def _check_batch_size(batch_size):
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"`batch_size` must be a positive integer or None; got {batch_size!r}.")
    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer or None; got {batch_size}.")


def _kind(x):
    if isinstance(x, tf.data.Dataset):
        return "tf.data.Dataset"
    if isinstance(x, keras.utils.PyDataset):
        return "PyDataset"
    if hasattr(x, "to_numpy") and hasattr(x, "columns"):
        return "DataFrame"
    if isinstance(x, collections.abc.Iterator):
        raise TypeError(
            f"`x` is a {type(x).__name__}, which can be read only once, but the Hessian "
            "reads its data on every product. Use tf.data.Dataset.from_generator(f, "
            "output_signature=...) with a function `f` returning a fresh generator, "
            "or a keras.utils.PyDataset."
        )
    return "arrays"


def _check_part_count(count, what):
    if not 1 <= count <= 3:
        raise ValueError(
            f"{what} must be `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`; "
            f"got a tuple of {count}."
        )


def _labelled(structure, name):
    """``(label, leaf)`` pairs in ``tf.nest.flatten`` order, labels such as ``x['a']``."""
    if isinstance(structure, collections.abc.Mapping):
        return [
            pair
            for key in sorted(structure)
            for pair in _labelled(structure[key], f"{name}[{key!r}]")
        ]
    if isinstance(structure, (list, tuple)):
        return [
            pair for i, item in enumerate(structure) for pair in _labelled(item, f"{name}[{i}]")
        ]
    return [(name, structure)]


def _labelled_parts(parts):
    return [
        pair for name, part in zip(_PARTS, parts, strict=False) for pair in _labelled(part, name)
    ]


def _is_leaf(structure):
    return not isinstance(structure, (collections.abc.Mapping, list, tuple))


def _same_structure(first, second, name, other):
    try:
        tf.nest.assert_same_structure(first, second)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{name}` must be one array or a nest matching {other}: {exc}") from None


def _batch_length(batch, where="a batch"):
    lengths = {int(tf.shape(leaf)[0]) for leaf in tf.nest.flatten(batch)}
    if len(lengths) != 1:
        raise ValueError(f"{where} has parts of different lengths: {sorted(lengths)}.")
    return lengths.pop()


def _relax(structure, what):
    """`structure`'s specs with an unknown batch dimension, so no batch size is traced in."""

    def relax(spec):
        if not isinstance(spec, tf.TensorSpec):
            raise TypeError(f"{what} must be dense tensors; got {spec}.")
        if spec.shape.rank is None or spec.shape.rank == 0:
            raise ValueError(f"{what} need a leading batch dimension; got shape {spec.shape}.")
        return tf.TensorSpec((None, *spec.shape[1:]), spec.dtype)

    return tf.nest.map_structure(relax, structure)


def _merge(first, second, where):
    """The most specific signature of both; dims that differ become None."""
    try:
        tf.nest.assert_same_structure(first, second)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} is not structured as the batches before it: {exc}") from None

    def merge(a, b):
        if a.dtype != b.dtype or a.shape.rank != b.shape.rank:
            raise ValueError(f"{where} holds {b}, where earlier batches held {a}.")
        return tf.TensorSpec(
            [p if p == q else None for p, q in zip(a.shape, b.shape, strict=True)], a.dtype
        )

    return tf.nest.map_structure(merge, first, second)


def _agree(reader, comm, compare_batches):
    """One signature for all ranks (ranks without batches take the others')."""
    if comm is None:
        return reader.signature
    digest = getattr(reader, "digest", None) if compare_batches else None
    gathered = _mpi.allgather_object((reader.signature, digest), comm)
    if len({d for _, d in gathered if d is not None}) > 1:
        raise ValueError(
            "the ranks read different batches from `x`; with `shard=True` every rank "
            "must read the same dataset in the same order (a `shuffle()` needs a `seed`)."
        )
    known = [signature for signature, _ in gathered if signature is not None]
    merged = known[0]
    for signature in known[1:]:
        merged = _merge(merged, signature, "another rank's data")
    return merged


def _equal(first, second):
    pairs = zip(tf.nest.flatten(first), tf.nest.flatten(second), strict=True)
    return all(np.array_equal(a.numpy(), b.numpy()) for a, b in pairs)


def _empty(spec):
    return tf.zeros([0 if d is None else d for d in spec.shape], spec.dtype)


# ------------------------------------------------------------ model inputs


def _model_inputs(model):
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


def _inputs_by_name(inputs):
    if inputs is None:
        return {}
    if isinstance(inputs, collections.abc.Mapping):
        return dict(inputs)
    return {t.name: t for t in tf.nest.flatten(inputs)}


def _pairs(x, inputs):
    """``(label, leaf, model input)`` for the leaves of `x` that pair with an input."""
    if inputs is None:
        return []
    if isinstance(x, collections.abc.Mapping):
        by_name = _inputs_by_name(inputs)
        return [(f"x[{k!r}]", x[k], by_name[k]) for k in sorted(x) if k in by_name]
    leaves, flat = _labelled(x, "x"), tf.nest.flatten(inputs)
    if len(leaves) != len(flat):
        return []
    return [(label, leaf, t) for (label, leaf), t in zip(leaves, flat, strict=True)]


def _check_strings(x_signature, inputs):
    for label, spec, tensor in _pairs(x_signature, inputs):
        if spec.dtype == tf.string and tensor.dtype != "string":
            raise TypeError(
                f"`{label}` holds strings, but the model input {tensor.name!r} expects "
                f"{tensor.dtype}; encode them first (e.g. keras.layers.StringLookup) or "
                "give the model a string input."
            )
