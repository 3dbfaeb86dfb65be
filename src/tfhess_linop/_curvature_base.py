"""The plumbing of the curvature operators: `CurvatureOperator`.

A curvature operator holds the `Hessian` of the same Keras objective (for
the loss, the gradient, the parameters, the data batches, the collective
sums and the preserved state) and its own compiled products: one forward
pass with a forward-mode JVP of the split points, the subclass's output
curvature applied to the JVPs, and one VJP; plus the exact Hessian of the
batch-level terms (``model.losses``) by forward-over-reverse.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from ._engine import _LOOP_WARNING, Routes, _dense
from ._objective import _together
from ._output_curvature import OutputSplit, output_losses
from ._products import _symmetrize
from .hessian import Hessian

__all__ = ["CurvatureOperator"]

_ZERO = tf.UnconnectedGradients.ZERO
_CHECK_SAMPLES = 8


class CurvatureOperator:
    """The plumbing shared by `GGN`, `Fisher` and `EmpiricalFisher`.

    Built by each subclass's ``from_keras``; holds the `Hessian` of the same
    objective (for the loss, the gradient and the parameters) and one
    compiled product per vector and per block of columns, summed over the
    data batches and ranks exactly as the Hessian's.

    Attributes
    ----------
    hessian : Hessian
        The Hessian of the same objective, on the same data and variables:
        `loss_value`, `gradient`, `parameters`, `set_parameters` and `at`
        act on the same model.
    n : int
    comm : mpi4py communicator or None
    max_columns : int
        Most columns per vectorised product.
    """

    # Whether the losses must be likelihoods (the Fisher's expectation).
    _likelihood = False

    @classmethod
    def _build(cls, arguments, **options):
        """``from_keras``: the Hessian of `arguments`, then this operator of its objective."""
        return cls.from_hessian(Hessian.from_keras(**arguments), **options)

    @classmethod
    def from_hessian(cls, hessian, **options):
        """The operator of the objective of a `Hessian` built by `Hessian.from_keras`.

        Collective over its `comm`. It shares the Hessian's data, batches,
        variables and communicator. Options are those of the subclass's
        ``from_keras`` beyond the Hessian's (`mc_samples` and `seed` for
        `Fisher`).

        Returns
        -------
        CurvatureOperator

        Examples
        --------
        >>> import numpy as np, keras
        >>> import tfhess_linop as thl
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, dtype="float64")])
        >>> x = np.random.default_rng(0).standard_normal((8, 2))
        >>> H = thl.Hessian.from_keras(model, "mse", x, np.zeros((8, 1)))
        >>> np.allclose(thl.GGN.from_hessian(H).dense(), H.dense())  # a linear model
        True
        """
        objective = getattr(hessian, "_objective", None)
        if not isinstance(hessian, Hessian) or objective is None:
            raise TypeError(
                f"{cls.__name__}.from_hessian needs a Hessian built by Hessian.from_keras "
                f"(a Keras model and its compiled loss); got {hessian!r}."
            )
        comm = hessian.comm
        source = objective._source
        recurrent = [
            layer.name
            for layer in objective._model._flatten_layers()
            if isinstance(layer, keras.layers.RNN)
        ]
        if recurrent:
            # Forward-mode differentiation cannot enter their while loops.
            raise ValueError(
                f"{cls.__name__} does not support recurrent layers yet ({recurrent}); "
                "use the Hessian."
            )
        self = cls.__new__(cls)
        if cls is CurvatureOperator:
            raise TypeError("build a GGN, Fisher or EmpiricalFisher, not their base.")
        self._configure(**options)
        self._losses = _together(
            lambda: output_losses(objective, cls.__name__, fisher=cls._likelihood), comm
        )
        self.hessian, self._objective = hessian, objective
        self._variables = hessian.variables
        self._layout = hessian._layout
        n = hessian.n
        batch = list(source.signature)
        vector = [tf.TensorSpec([n], tf.float64)]
        matrix = [tf.TensorSpec([n, None], tf.float64)]
        jit = hessian._jit_compile
        self._single = tf.function(self._product, input_signature=vector + batch, jit_compile=jit)
        candidates = [
            (tf.function(self._vectorised, input_signature=matrix + batch, jit_compile=jit), None),
            (tf.function(self._looped, input_signature=matrix + batch), _LOOP_WARNING),
        ]
        self._block = Routes(candidates, set())
        _together(self._check_split, comm)
        return self

    def _configure(self):
        pass

    # ------------------------------------------------------------ public

    @property
    def n(self):
        """Number of parameters."""
        return self.hessian.n

    @property
    def comm(self):
        """The communicator (None: one process)."""
        return self.hessian.comm

    @property
    def variables(self):
        """The underlying ``tf.Variable`` objects, in layout order."""
        return self.hessian.variables

    @property
    def n_samples(self):
        """Samples over all batches and ranks."""
        return self.hessian.n_samples

    @property
    def max_columns(self):
        """Most columns per vectorised product; wider blocks are split."""
        return self.hessian.max_columns

    @max_columns.setter
    def max_columns(self, value):
        self.hessian.max_columns = value

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n}, samples={self.n_samples})"

    def mvp(self, v):
        """Matrix-vector product(s) with the operator. Collective over `comm`.

        Parameters
        ----------
        v : array_like, shape (n,) or (n, k)
            One vector, or k vectors as columns (computed by vectorised
            calls of at most `max_columns` columns).

        Returns
        -------
        ndarray, float64, same shape as `v`
        """
        hessian = self.hessian
        v = hessian._check_vectors(v, "v")
        if v.ndim == 1:
            return hessian._sum(self._single, (self.n,), v)
        if v.shape[1] == 1:
            return hessian._sum(self._single, (self.n,), v[:, 0])[:, None]
        result = np.empty_like(v)
        for start in range(0, v.shape[1], self.max_columns):
            block = np.ascontiguousarray(v[:, start : start + self.max_columns])
            stop = start + block.shape[1]
            result[:, start:stop] = hessian._sum(self._block, block.shape, block)
        return result

    # `as_linop` and the package's algorithms call the product `hvp`.
    hvp = mvp

    def dense(self, block_size=None, progress=False):
        """The dense (n, n) matrix, from products with identity blocks. Collective over `comm`.

        Parameters
        ----------
        block_size : int, optional
            Columns per product (default: `max_columns`).
        progress : bool, default: False
            Ignored (accepted as by `Hessian.dense`).

        Returns
        -------
        ndarray, shape (n, n)
            Symmetric (the average of the assembled matrix and its transpose).
        """
        n = self.n
        block_size = self.max_columns if block_size is None else int(block_size)
        if n * n * 8 > 2**30:
            warnings.warn(f"dense() allocates an ({n}, {n}) float64 array.", stacklevel=2)
        result = np.empty((n, n))
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            block = np.zeros((n, stop - start))
            block[np.arange(start, stop), np.arange(stop - start)] = 1.0
            result[:, start:stop] = self.mvp(block)
        _symmetrize(result, block_size)
        return result

    def loss_value(self):
        """The objective at the current parameters. Collective over `comm`."""
        return self.hessian.loss_value()

    def value_and_gradient(self):
        """The objective and its gradient (as `Hessian.value_and_gradient`)."""
        return self.hessian.value_and_gradient()

    def gradient(self):
        """The gradient of the objective. Collective over `comm`."""
        return self.hessian.gradient()

    # ---------------------------------------------------------- products

    def _product(self, vector, *batch):
        objective, variables = self._objective, self._variables
        tangents = self._layout.split(vector)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            with tf.autodiff.ForwardAccumulator(variables, tangents) as accumulator:
                with tf.GradientTape(watch_accessed_variables=False) as regularizer_tape:
                    regularizer_tape.watch(variables)
                    x, y, weights, predictions = objective._call_model(batch)
                    others = objective.other_terms(x, y, weights, predictions)
                regularizer_gradient = None
                if others:
                    regularizer_gradient = _dense(
                        regularizer_tape.gradient(
                            tf.add_n(others), variables, unconnected_gradients=_ZERO
                        )
                    )
        split = OutputSplit(objective, self._losses, (x, y, weights, predictions))
        keys = sorted(split.points)
        points = [split.points[k] for k in keys]
        jvps = accumulator.jvp(points, unconnected_gradients=_ZERO)
        constants = {k: tf.stop_gradient(p) for k, p in zip(keys, points, strict=True)}
        products = self._output_product(split, constants, dict(zip(keys, jvps, strict=True)), x)
        pulled = tape.gradient(
            points,
            variables,
            output_gradients=[products[k] for k in keys],
            unconnected_gradients=_ZERO,
        )
        pulled = _dense(pulled)
        if regularizer_gradient is not None:
            second = accumulator.jvp(regularizer_gradient, unconnected_gradients=_ZERO)
            pulled = [a + tf.cast(b, a.dtype) for a, b in zip(pulled, second, strict=True)]
        return self._layout.concat(pulled)

    def _vectorised(self, matrix, *batch):
        columns = tf.vectorized_map(lambda v: self._product(v, *batch), tf.transpose(matrix))
        return tf.transpose(columns)

    def _looped(self, matrix, *batch):
        columns = tf.map_fn(
            lambda v: self._product(v, *batch),
            tf.transpose(matrix),
            fn_output_signature=tf.float64,
        )
        return tf.transpose(columns)

    def _output_product(self, split, points, tangents, x):
        raise NotImplementedError

    def _check_split(self):
        """Refuse a split whose loss differs from the objective's (on the first samples)."""
        head = self._objective._source.head(_CHECK_SAMPLES)
        if int(tf.shape(tf.nest.flatten(head[0])[0])[0]) == 0:
            return None
        objective = self._objective

        @tf.function
        def both(*batch):
            x, y, weights, predictions = objective._call_model(batch)
            split = OutputSplit(objective, self._losses, (x, y, weights, predictions))
            original = objective.output_term(x, y, weights, predictions)
            return original, split.loss(dict(split.points))[0]

        original, rebuilt = (float(t) for t in both(*head))
        tolerance = np.sqrt(np.finfo(objective._dtype.as_numpy_dtype).eps)
        if not abs(original - rebuilt) <= tolerance * max(abs(original), 1e-30):
            raise ValueError(
                f"{type(self).__name__}: the compiled loss evaluated at the split point "
                f"({rebuilt!r}) differs from the objective's ({original!r}); the model's "
                "outputs cannot be split from its loss here."
            )
        return None
