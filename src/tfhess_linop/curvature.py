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

import numpy as np
import tensorflow as tf

from ._curvature_base import CurvatureOperator
from ._output_curvature import sample_hash

__all__ = ["GGN", "CurvatureOperator", "EmpiricalFisher", "Fisher"]


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
        return cls._build(_arguments(locals()))

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
        return cls._build(_arguments(locals()))

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

    _likelihood = True

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
        options = {key: arguments.pop(key) for key in ("mc_samples", "seed")}
        return cls._build(arguments, **options)

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
