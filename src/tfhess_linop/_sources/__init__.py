"""Data sources: this rank's share of the data, as a re-iterable stream of batches.

`DataSource` takes what Keras' ``fit`` takes (arrays, tensors and nests of
them, a pandas DataFrame, a finite ``tf.data.Dataset``, a
``keras.utils.PyDataset``) and yields batches ``(x,)``, ``(x, y)`` or
``(x, y, sample_weight)`` of tensor nests, all described by one
``tf.TensorSpec`` signature with a ``None`` batch dimension, so that an
uneven last batch (or an uneven shard) never retraces a function.

Modules: `_arrays` (arrays and DataFrames, converted to tensor batches once),
`_streams` (datasets, read batch by batch on every pass), `_nests` (labels,
specs and model inputs, shared by both).
"""

from __future__ import annotations

import collections.abc

import keras
import numpy as np
import tensorflow as tf

from .. import _mpi
from ._arrays import ArrayReader, from_frame
from ._nests import batch_length, check_strings, merge, model_inputs
from ._streams import DatasetReader, PyDatasetReader

__all__ = ["DataSource"]


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
    A dataset is read once at construction (to count its samples, check
    them for NaN/inf and learn its signature) and once per pass after that;
    at most one batch is held at a time. It must give the same batches on
    every pass and, sharded, on every rank: reshuffling would change the
    operator between two products and make ranks skip or repeat samples, so
    construction compares the first batch of two passes and (a sharded
    ``tf.data.Dataset``) checksums of every batch over the ranks, and
    refuses a difference.

    Without `model` inputs to compare with, a ``tf.data.Dataset`` is taken
    to be batched, as Keras takes it, unless its ``x`` holds scalars.
    Integer or boolean sample weights become float64; nothing else is cast.
    """

    def __init__(
        self, x, y=None, sample_weight=None, *, batch_size=None, comm=None, shard=True, model=None
    ):
        comm = _mpi.resolve_comm(comm)
        rank, size = (_mpi.rank(comm), _mpi.size(comm)) if shard else (0, 1)
        # Every check runs inside the collective sum: a rank that fails there
        # makes every rank raise, instead of leaving them waiting.
        self.n_global = int(
            _mpi.collective_sum(
                lambda: self._read(x, y, sample_weight, batch_size, model, rank, size), (), comm
            )
        )
        self.n_local = int(self._reader.n_local)
        if self.n_global == 0:
            data = f"the {self.kind} `x`" if self.kind in _STREAMED else "`x` and `y`"
            raise ValueError(f"{data} hold no samples on any rank.")
        self.signature = _agree(self._reader, comm, compare_batches=shard)
        self.has_y = len(self.signature) > 1
        self.has_sample_weight = len(self.signature) > 2

    def _read(self, x, y, sample_weight, batch_size, model, rank, size):
        """Check the arguments and read this rank's data; return its sample count."""
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
        inputs = model_inputs(model)
        if self.kind == "tf.data.Dataset":
            self._reader = DatasetReader(x, batch_size, inputs, rank, size)
        elif self.kind == "PyDataset":
            self._reader = PyDatasetReader(x, rank, size)
        else:
            x_arrays = from_frame(x, inputs) if self.kind == "DataFrame" else x
            self._reader = ArrayReader((x_arrays, y, sample_weight), batch_size, rank, size)
        if self._reader.signature is not None:
            check_strings(self._reader.signature[0], inputs)
        return self._reader.n_local

    def __iter__(self):
        """One fresh pass over this rank's batches, tuples matching `signature`."""
        return iter(self._reader)

    def __len__(self):
        """Number of batches on this rank."""
        return self._reader.n_batches

    def head(self, m):
        """The first ``min(m, n_local)`` local samples as one batch.

        Parameters
        ----------
        m : int
            Samples wanted.

        Returns
        -------
        tuple
            Tensor nests structured as `signature`, possibly of 0 samples.
        """
        m = min(int(m), self.n_local)
        pieces, held = [], 0
        for batch in self:
            if held >= m:
                break
            pieces.append(batch)
            held += batch_length(batch)
        if not pieces:
            return tf.nest.map_structure(_empty, self.signature)
        return tf.nest.map_structure(lambda *leaves: tf.concat(leaves, 0)[:m], *pieces)

    def __repr__(self):
        return (
            f"DataSource(kind={self.kind!r}, samples={self.n_local} of {self.n_global}, "
            f"batches={len(self)})"
        )


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
        merged = merge(merged, signature, "another rank's data")
    return merged


def _empty(spec):
    return tf.zeros([0 if d is None else d for d in spec.shape], spec.dtype)
