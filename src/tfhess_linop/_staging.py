"""Vectors and blocks handed to TensorFlow without a fresh allocation.

Each product takes a NumPy array that an algorithm has just written, while
the product before it evicted the caches. ``tf.constant`` allocates a new
tensor and copies into it: for a vector of the 784-128-10 MLP (101,770
entries) 190 us after a gradient, against 90 us for a copy into one buffer
that is reused and that TensorFlow then reads in place (DLPack), a gradient
being 2.6 ms; for a 32-column block of the 1.07M-parameter MLP (274 MB) the
fresh allocation's page faults cost more than the copy itself. TensorFlow's
CPU kernels require their buffers aligned to 64 bytes (a misaligned one
aborts the process), which NumPy does not guarantee: the buffer is aligned
here.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import tensorflow as tf

from ._linalg import all_finite

__all__ = ["Recycled", "Staging", "copy_cast"]

# Bytes: TensorFlow's CPU kernels require tensor buffers aligned to this.
_ALIGNMENT = 64
# The dtypes a buffer can be handed over in (NumPy's DLPack export).
_DLPACK_FLOATS = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))
# Columns per slab of a transposing copy (measured best of 256 to 16,384).
_SLAB = 512
# Entries per piece of a copy in one order: 1 MiB of float64, within L2.
_CHUNK = 1 << 17
# Results from this size on are recycled (`Recycled`): glibc's malloc maps
# every allocation over 32 MiB afresh (its largest mmap threshold) and
# returns it to the system when freed.
_RECYCLE_BYTES = 32 * 2**20


class Staging:
    """A reusable, aligned buffer per thread, lent to TensorFlow per call.

    The tensor `tensor` returns shares the calling thread's buffer: that
    thread must not call `tensor` again while TensorFlow may still read the
    previous one (every user here waits for the product's result first).
    """

    def __init__(self):
        self._local = threading.local()

    def tensor(self, array, dtype=np.float64, *, finite=False):
        """`array` (any layout) as a `dtype` tensor read from the buffer.

        The cast to `dtype` (float32 for a float32 model) happens in the
        copy, which then writes half the bytes, and TensorFlow needs no cast.
        The cast rounds to nearest, as TensorFlow's ``tf.cast`` does
        (``"unsafe"`` in NumPy's terms). A bfloat16 block is handed over in
        float64 and cast by TensorFlow. With `finite`, a `ValueError` is
        raised if `array` has a NaN or an infinite entry, checked on the
        copy while it is in the caches (see `copy_cast`).
        """
        dtype = np.dtype(dtype)
        if dtype not in _DLPACK_FLOATS:
            # NumPy cannot export bfloat16 (ml_dtypes) through DLPack.
            return tf.cast(self.tensor(array, finite=finite), tf.as_dtype(dtype))
        lent = getattr(self._local, "lent", None)
        if lent is None or lent[0] != (array.shape, dtype):
            lent = self._local.lent = self._lend(array.shape, dtype)
        _, buffer, tensor = lent
        if not copy_cast(buffer, array, check=finite):
            raise ValueError("`v` has non-finite entries (NaN or inf).")
        return tensor

    def _lend(self, shape, dtype):
        """((shape, dtype), buffer, tensor): an aligned view of the buffer and its tensor.

        The tensor is made once per shape and handed out again: it reads
        whatever the buffer holds when TensorFlow runs (a new DLPack
        import per product took 30-130 us, 1-4 % of a product of the
        784-128-10 MLP).
        """
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = getattr(self._local, "raw", None)
        if raw is None or raw.size < nbytes + _ALIGNMENT:
            self._local.lent = None  # holds the old buffer
            raw = self._local.raw = np.empty(nbytes + _ALIGNMENT, dtype=np.uint8)
        start = -raw.ctypes.data % _ALIGNMENT
        buffer = raw[start : start + nbytes].view(dtype).reshape(shape)
        return (shape, dtype), buffer, tf.experimental.dlpack.from_dlpack(buffer.__dlpack__())

    def release(self):
        """Drop this thread's buffer (freed once TensorFlow holds no view of it)."""
        self._local.raw = self._local.lent = None


class Recycled:
    """Float64 result arrays, a large one reused once nothing else refers to it.

    A fresh result of 32 MiB or more is new memory from the system: the
    (1.07M, 32) float64 block of a 1.07M-parameter MLP (274 MB) cost 40 to
    420 ms of page faults and zeroing per product (a 32-column block took
    0.85 s), on a virtual machine that returns freed memory to its host.
    The last large array handed out is held here; when the caller has
    dropped it (and every view of it: CPython's reference count is then
    this holder's alone), the next result of its shape is written into it.
    At most one array is held, until `release`.
    """

    def __init__(self):
        self._held = None

    def empty(self, shape):
        """A float64 C-ordered array of `shape` that nothing else refers to."""
        if int(np.prod(shape, dtype=np.int64)) * 8 < _RECYCLE_BYTES:
            return np.empty(shape)
        # Two references when nothing else holds it: the attribute and
        # getrefcount's own argument.
        if self._held is not None and self._held.shape == shape:
            if sys.getrefcount(self._held) == 2:
                return self._held
        self._held = None  # the caller's now: freed when they drop it
        self._held = np.empty(shape)
        return self._held

    def release(self):
        """Drop the array held (freed once the caller holds no reference)."""
        self._held = None


def copy_cast(destination, source, *, check=False):
    """``destination[...] = source``, cast, read and written in cache-sized pieces.

    Where one of two 2-D arrays is C-ordered and the other is not, a copy
    in one call walks one of them across its rows: (32, 101,770) from a
    C-ordered (101,770, 32) block, cast to float32, took 16.7 ms in one
    call and 4.8 ms in slabs whose source and destination both stay in
    the caches.

    Returns
    -------
    bool
        With `check`, whether every entry of `source` is finite (else True).
        Each piece is tested right after its copy, while it is in the
        caches, by `all_finite` (NumPy's sum, not BLAS, whose threads would
        busy-wait against TensorFlow's). A separate pass over a float64 vector of the
        784-128-10 MLP, read back from memory after a gradient, took 140 us
        (a gradient: 2.3-3.4 ms); the sum of its float32 copy 20 us.
    """
    if destination.size <= _CHUNK and not _transposing(destination, source):
        # A vector, or a small block: one piece.
        np.copyto(destination, source, casting="unsafe")
        if not check:
            return True
        finite = all_finite(destination)
    else:
        finite = True
        for part, origin in _pieces(destination, source):
            np.copyto(part, origin, casting="unsafe")
            if check and finite:
                finite = all_finite(part)
    if not finite:
        # Also where the cast overflowed a finite entry (beyond float32's
        # range): the source decides, and the product then sees the inf.
        finite = bool(np.isfinite(source).all())
    return finite


def _pieces(destination, source):
    """(destination, source) views that together cover the arrays, each cache-sized."""
    if _transposing(destination, source):
        for first in range(0, destination.shape[1], _SLAB):
            slab = slice(first, first + _SLAB)
            yield destination[:, slab], source[:, slab]
        return
    order = _common_order(destination, source)
    if order is None:
        yield destination, source
        return
    flat_destination = destination.reshape(-1, order=order)
    flat_source = source.reshape(-1, order=order)
    for first in range(0, destination.size, _CHUNK):
        chunk = slice(first, first + _CHUNK)
        yield flat_destination[chunk], flat_source[chunk]


def _transposing(destination, source):
    """Whether a copy in one call would walk one of two 2-D arrays across its rows."""
    return (
        destination.ndim == 2
        and destination.flags.c_contiguous != source.flags.c_contiguous
        and destination.shape[1] > _SLAB
    )


def _common_order(first, second):
    """The order ("C" or "F") in which both arrays are contiguous, else None."""
    for order, flag in (("C", "c_contiguous"), ("F", "f_contiguous")):
        if getattr(first.flags, flag) and getattr(second.flags, flag):
            return order
    return None
