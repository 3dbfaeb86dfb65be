r"""Curvature beyond the Hessian: the generalized Gauss-Newton, Fisher and empirical Fisher.

Each operator splits the objective Keras trains, on all the data, as
:math:`L(\theta) = \sum_i \ell_i(s_i(\theta)) + R(\theta)`: the compiled
loss of the tensors :math:`s_i` that enter it (the model's outputs, or the
logits of a softmax or sigmoid output, as Keras' cross-entropy takes them),
with its sample weights, masks, loss weights and global divisors, and the
batch-level terms R (``model.losses``: regularizers, ``add_loss``). With
:math:`J_i = \partial s_i / \partial\theta`,

- `GGN`: :math:`G = \sum_i J_i^\top \nabla^2_s \ell_i\, J_i + \nabla^2 R`;
- `Fisher`: :math:`F = \sum_i J_i^\top\, \mathbb{E}_{\hat y \sim p(\cdot|s_i)}
  [\nabla_s^2 \ell_i(\hat y)]\, J_i + \nabla^2 R`, exactly or from
  `mc_samples` draws of the targets;
- `EmpiricalFisher`: :math:`E = \sum_i c_i^{-1} \nabla L_i \nabla L_i^\top
  + \nabla^2 R`, where :math:`L_i` is sample i's share of the data term and
  :math:`c_i` its weight in it (1/N for a plain mean).

The regularizers R are not a function of the outputs: they enter every
operator through their own exact Hessian. Each product is one forward pass
with one forward-mode JVP through the model, the output curvature applied
per sample (no second derivative of the network), and one VJP.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from ._engine import _LOOP_WARNING, Routes, _dense
from ._objective import _together
from ._output_curvature import OutputSplit, output_losses, sample_hash
from .hessian import Hessian, _symmetrize

__all__ = ["GGN", "CurvatureOperator", "EmpiricalFisher", "Fisher"]

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

    @classmethod
    def _build(cls, model, loss, x, y, *, mc_samples=None, seed=None, **arguments):
        hessian = Hessian.from_keras(model, loss, x, y, **arguments)
        options = {} if cls is not Fisher else {"mc_samples": mc_samples, "seed": seed}
        return cls.from_hessian(hessian, **options)

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
            lambda: output_losses(objective, cls.__name__, fisher=cls is Fisher), comm
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


def _per_row(grads, weights, tangents, scale=1.0):
    """Σ over rows of g gᵀ t / (c·scale): the outer products of the weighted row gradients."""
    coefficient = tf.math.divide_no_nan(tf.reduce_sum(grads * tangents, -1), weights * scale)
    return grads * coefficient[..., None]


class GGN(CurvatureOperator):
    r"""The generalized Gauss-Newton matrix of the objective a Keras model trains.

    :math:`G = \sum_i J_i^\top \nabla^2_s \ell_i J_i + \nabla^2 R`: the model's
    Jacobian, the compiled loss's exact Hessian in the outputs (or in the
    logits Keras' cross-entropy takes), and the exact Hessian of
    ``model.losses``. Positive semi-definite for the convex losses (mean
    squared error, cross-entropy from logits or of a softmax/sigmoid output)
    with convex regularizers; equal to the Hessian for a model linear in its
    parameters. Build it with `from_keras`; ``as_linop(G)`` is a SciPy
    ``LinearOperator``.
    """

    @classmethod
    def from_keras(
        cls,
        model,
        loss=None,
        x=None,
        y=None,
        *,
        sample_weight=None,
        variables=None,
        batch_size=None,
        comm=None,
        shard=True,
        training=False,
        model_losses=True,
        allow_batch_dependence=False,
        check_deterministic=False,
        jit_compile=False,
        mode="auto",
    ):
        """The GGN of the objective Keras trains, on all the data, w.r.t. the weights.

        Collective over `comm`. The arguments are those of
        `Hessian.from_keras`, which describes them; the data is read,
        batched and sharded the same way, and the operator is the same for
        any `batch_size` and number of ranks. The compiled loss of every
        output must be one of: mean squared error, categorical, sparse
        categorical or binary cross-entropy, from logits or probabilities
        (others raise `ValueError`).

        Returns
        -------
        GGN

        Examples
        --------
        For a linear model and mean squared error the GGN is the Hessian,
        :math:`2/N\\, [x\\ 1]^T [x\\ 1]`:

        >>> import numpy as np, keras
        >>> import tfhess_linop as thl
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, dtype="float64")])
        >>> x = np.random.default_rng(0).standard_normal((20, 3))
        >>> G = thl.GGN.from_keras(model, "mse", x, np.ones((20, 1)), batch_size=7)
        >>> X1 = np.hstack([x, np.ones((20, 1))])
        >>> np.allclose(G.dense(), 2 * X1.T @ X1 / 20)
        True
        """
        return cls._build(**_arguments(locals()))

    def _output_product(self, split, points, tangents, x):
        return split.hessian_product(points, tangents)


class EmpiricalFisher(CurvatureOperator):
    r"""The empirical Fisher :math:`\sum_i c_i^{-1} \nabla L_i \nabla L_i^\top + \nabla^2 R`.

    :math:`L_i` is sample i's share of the compiled loss (with its sample
    weights, masks and loss weights) and :math:`c_i` its total weight in the
    objective, so that for a plain mean over N samples this is
    :math:`\frac1N \sum_i \nabla\ell_i \nabla\ell_i^\top`. The per-sample
    gradients are never formed: each is :math:`J_i^\top \nabla_s L_i`, so a
    product is one JVP, the rank-one output factors applied per sample, and
    one VJP. ``model.losses`` enter through their exact Hessian.
    """

    @classmethod
    def from_keras(
        cls,
        model,
        loss=None,
        x=None,
        y=None,
        *,
        sample_weight=None,
        variables=None,
        batch_size=None,
        comm=None,
        shard=True,
        training=False,
        model_losses=True,
        allow_batch_dependence=False,
        check_deterministic=False,
        jit_compile=False,
        mode="auto",
    ):
        """The empirical Fisher of the objective Keras trains. Collective over `comm`.

        Arguments as for `GGN.from_keras`.

        Returns
        -------
        EmpiricalFisher

        Examples
        --------
        For a linear model and mean squared error, sample i's gradient is
        :math:`2 r_i [x_i\\ 1]` with the residual :math:`r_i`:

        >>> import numpy as np, keras
        >>> import tfhess_linop as thl
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, dtype="float64")])
        >>> x = np.random.default_rng(0).standard_normal((20, 3))
        >>> E = thl.EmpiricalFisher.from_keras(model, "mse", x, np.ones((20, 1)))
        >>> g = 2 * (model.predict(x, verbose=0) - 1) * np.hstack([x, np.ones((20, 1))])
        >>> np.allclose(E.dense(), g.T @ g / 20)
        True
        """
        return cls._build(**_arguments(locals()))

    def _output_product(self, split, points, tangents, x):
        grads, weights = split.weighted_gradients(points)
        keys = sorted(points)
        total_weight = tf.add_n([_sum_rows(weights[k], 1) for k in keys])
        inner = tf.add_n([_sum_rows(grads[k] * tangents[k], 1) for k in keys])
        coefficient = tf.math.divide_no_nan(inner, total_weight)
        return {k: grads[k] * _expand(coefficient, grads[k]) for k in keys}


class Fisher(CurvatureOperator):
    r"""The Fisher information of the model's predictive distribution, exact or Monte Carlo.

    Each loss is, up to a scale, the negative log-likelihood of a
    distribution of the targets given the model's output: a Gaussian of
    variance 1/2 per component (mean squared error), a categorical
    (cross-entropy), independent Bernoullis (binary cross-entropy). The
    Fisher replaces the loss's Hessian at the observed targets by its
    expectation under that distribution, which equals the expected outer
    product of the loss's gradient (divided by the scale). Exactly
    (``mc_samples=None``) this is the GGN for mean squared error and
    cross-entropy from logits; with ``mc_samples=m`` it is the average of
    m draws of targets per sample, a positive semi-definite matrix of rank
    at most m per output row. ``model.losses`` enter through their exact
    Hessian.

    The draws are fixed by `seed` and by each sample's content (not its
    position), so the operator is one fixed matrix, the same for every
    batching and number of ranks.
    """

    @classmethod
    def from_keras(
        cls,
        model,
        loss=None,
        x=None,
        y=None,
        *,
        mc_samples=None,
        seed=0,
        sample_weight=None,
        variables=None,
        batch_size=None,
        comm=None,
        shard=True,
        training=False,
        model_losses=True,
        allow_batch_dependence=False,
        check_deterministic=False,
        jit_compile=False,
        mode="auto",
    ):
        """The Fisher of the objective Keras trains. Collective over `comm`.

        Parameters
        ----------
        mc_samples : int, optional
            None (default): the exact Fisher. Otherwise the number of target
            draws per sample of the Monte Carlo Fisher.
        seed : int, default: 0
            Fixes the draws.
        model, loss, x, y, sample_weight, variables, batch_size, comm, shard, training, \
model_losses, allow_batch_dependence, check_deterministic, jit_compile, mode
            As for `GGN.from_keras`. Label smoothing and ``ignore_class`` make
            a loss no likelihood: they raise `ValueError`.

        Returns
        -------
        Fisher

        Examples
        --------
        For softmax cross-entropy from logits the exact Fisher is the GGN:

        >>> import numpy as np, keras
        >>> import tfhess_linop as thl
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, dtype="float64")])
        >>> x = np.random.default_rng(0).standard_normal((10, 2))
        >>> y = np.arange(10) % 3
        >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        >>> F = thl.Fisher.from_keras(model, loss, x, y)
        >>> np.allclose(F.dense(), thl.GGN.from_keras(model, loss, x, y).dense())
        True
        """
        arguments = _arguments(locals())
        return cls._build(**arguments)

    def _configure(self, mc_samples=None, seed=0):
        if mc_samples is not None and (
            isinstance(mc_samples, bool)
            or not isinstance(mc_samples, (int, np.integer))
            or mc_samples < 1
        ):
            raise ValueError(
                f"`mc_samples` must be a positive integer or None; got {mc_samples!r}."
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"`seed` must be an integer; got {type(seed).__name__}.")
        self.mc_samples = None if mc_samples is None else int(mc_samples)
        self.seed = int(seed)

    def __repr__(self):
        return f"Fisher(n={self.n}, samples={self.n_samples}, mc_samples={self.mc_samples})"

    def _output_product(self, split, points, tangents, x):
        if self.mc_samples is not None:
            return self._sampled(split, points, tangents, x)
        targets = split.mean_targets(points)
        enumerated = [
            k for k in points if split.kind(k) == "sparse_categorical" and not split.logits[k]
        ]
        kept = {k: tf.zeros_like(t) if k in enumerated else t for k, t in tangents.items()}
        products = split.hessian_product(points, kept, targets)
        for k in enumerated:
            point = points[k]
            probabilities = split.class_probabilities(k, point)
            total = tf.zeros_like(point)
            for c in range(int(point.shape[-1])):
                labels = tf.fill(tf.shape(point)[:-1], tf.constant(c, tf.int64))
                grads, weights = split.weighted_gradients(points, {k: labels})
                total += probabilities[..., c : c + 1] * _per_row(grads[k], weights[k], tangents[k])
            products[k] = total
        return products

    def _sampled(self, split, points, tangents, x):
        key = sample_hash(x) + tf.constant(self.seed % 2**32, tf.int64)
        products = {k: tf.zeros_like(t) for k, t in tangents.items()}
        for draw in range(self.mc_samples):
            targets = split.sampled_targets(points, key, draw)
            grads, weights = split.weighted_gradients(points, targets)
            for k in points:
                scale = split.likelihood_scale(k, points[k])
                products[k] += _per_row(grads[k], weights[k], tangents[k], scale)
        return {k: p / self.mc_samples for k, p in products.items()}


def _sum_rows(tensor, first):
    axes = list(range(first, tensor.shape.rank))
    return tf.reduce_sum(tensor, axes) if axes else tensor


def _expand(coefficient, like):
    return tf.reshape(coefficient, [-1] + [1] * (like.shape.rank - 1))


def _arguments(local):
    """The `from_keras` locals, without the class."""
    return {k: v for k, v in local.items() if k not in ("cls", "__class__")}
