"""The flat parameter vector and its variable-shaped pieces.

The flat layout is: variables in the order given, each flattened in C order.
The ``split``/``concat`` methods run inside a ``tf.function``; the operator
is float64 whatever the variables' dtype, so the casts happen there too.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class FlatLayout:
    """Map between a flat float64 vector and a list of variable-shaped tensors.

    Parameters
    ----------
    variables : list of tf.Variable
        The variables, in the order of the flat layout.
    """

    def __init__(self, variables):
        self.shapes = [tuple(int(d) for d in v.shape) for v in variables]
        self.dtypes = [v.dtype for v in variables]
        self.sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]
        self.n = int(sum(self.sizes))
        # Blocks are handled in the variables' own dtype when they share one.
        self.working_dtype = self.dtypes[0] if len(set(self.dtypes)) == 1 else tf.float64

    # In-graph maps (used inside tf.function).

    def split(self, vector):
        """(n,) tensor (float64, or a row of `rows`) -> tensors in the variables' shapes, dtypes."""
        pieces = tf.split(vector, self.sizes)
        return [
            tf.cast(tf.reshape(piece, shape), dtype)
            for piece, shape, dtype in zip(pieces, self.shapes, self.dtypes, strict=True)
        ]

    def concat(self, tensors):
        """List of variable-shaped tensors -> (n,) float64 tensor."""
        return tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors], axis=0)

    def rows(self, matrix):
        """(n, k) float64 block -> its columns as the rows of a (k, n) tensor.

        In `working_dtype`, cast before the transpose: a float32 model's
        block is transposed at half the bytes, and its columns need no cast.
        """
        return tf.transpose(tf.cast(matrix, self.working_dtype))

    def concat_row(self, tensors):
        """List of variable-shaped tensors -> (n,) tensor in `working_dtype`."""
        return tf.concat(
            [tf.reshape(tf.cast(t, self.working_dtype), [-1]) for t in tensors], axis=0
        )

    def columns(self, rows):
        """(k, n) tensor of rows -> the (n, k) float64 block (transposed, then cast)."""
        return tf.cast(tf.transpose(rows), tf.float64)

    # NumPy maps (used by the public flatten/unflatten).

    def flatten(self, arrays):
        """List of arrays in the variables' shapes -> (n,) float64 ndarray."""
        arrays = list(arrays)
        if len(arrays) != len(self.shapes):
            raise ValueError(
                f"expected {len(self.shapes)} arrays (one per variable), got {len(arrays)}."
            )
        flat = []
        for i, (array, shape) in enumerate(zip(arrays, self.shapes, strict=True)):
            array = np.asarray(array, dtype=np.float64)
            if array.shape != shape:
                raise ValueError(
                    f"array {i} must have the shape of variable {i}, {shape}; got {array.shape}."
                )
            flat.append(array.reshape(-1))
        return np.concatenate(flat) if flat else np.zeros(0)

    def unflatten(self, vector):
        """(n,) array -> list of float64 ndarrays in the variables' shapes."""
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (self.n,):
            raise ValueError(f"`vec` must have shape ({self.n},), got {vector.shape}.")
        bounds = np.cumsum([0, *self.sizes])
        return [
            vector[start:stop].reshape(shape)
            for start, stop, shape in zip(bounds[:-1], bounds[1:], self.shapes, strict=True)
        ]
