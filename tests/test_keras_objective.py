"""`Hessian.from_keras` is the Hessian of the objective Keras trains (issue 10).

The reference for every case is a dense Hessian by nested ``tf.GradientTape``s
(``tape.jacobian`` of the gradient) of Keras' own ``model.compute_loss`` on all
the data as one batch, in float64: compiled losses with ``loss_weights``,
every reduction, masks, sample weights, ``model.losses`` and overridden
``compute_loss`` come from Keras itself, never from the package. One
correction: ``tf.nn.moments`` (BatchNormalization in training mode,
LayerNormalization) has a ``stop_gradient`` that drops a second-order term,
so the reference differentiates exact moments instead (`exact_moments`;
checked against finite differences of the gradient).

Keras losses compute in ``floatx``, so this module runs with float64 floatx
(restored afterwards) and gives every layer an explicit float64 dtype.
"""

import math
import re
import warnings
from functools import partial
from typing import Any, NamedTuple
from unittest import mock

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from keras import ops
from keras.src.backend.tensorflow import nn as keras_tf_nn

import tfhess_linop as thl
from conftest import dense_reference

F64 = "float64"
N_SAMPLES = 11  # batches of 3 and 7 leave uneven tails
BATCH_SIZES = [None, 1, 3, 7]


@pytest.fixture(scope="module", autouse=True)
def float64_floatx():
    previous = keras.config.floatx()
    keras.config.set_floatx(F64)
    yield
    keras.config.set_floatx(previous)


# ----------------------------------------------------------------- models


class Problem(NamedTuple):
    model: Any
    x: Any
    y: Any
    sample_weight: Any = None
    training: bool = False


def dense(units, **kwargs):
    return keras.layers.Dense(units, dtype=F64, **kwargs)


def mlp(n_in=3, n_hidden=3, n_out=2, seed=0, **output_kwargs):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((n_in,), dtype=F64),
            dense(n_hidden, activation="tanh"),
            dense(n_out, name="out", **output_kwargs),
        ]
    )


def compiled(model, problem_data, **compile_kwargs):
    """Compile `model` and build its compiled loss once, eagerly (Keras builds it lazily)."""
    model.compile(optimizer="sgd", **compile_kwargs)
    problem = Problem(model, *problem_data)
    objective(problem)()
    return problem


def regression_data(n_in=3, n_out=2, n=N_SAMPLES, seed=1, weighted=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in))
    y = rng.standard_normal((n, n_out))
    return x, y, (rng.uniform(0.2, 2.0, n) if weighted else None)


def regularized(loss="mse", loss_weights=None, n=N_SAMPLES):
    """L2 kernel and bias regularizers and an L2 activity regularizer (26 parameters)."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype=F64),
            dense(
                4,
                activation="tanh",
                kernel_regularizer=keras.regularizers.L2(1e-2),
                bias_regularizer=keras.regularizers.L2(1e-3),
                activity_regularizer=keras.regularizers.L2(3e-2),
                name="hidden",
            ),
            dense(2, kernel_regularizer=keras.regularizers.L2(2e-2), name="out"),
        ]
    )
    return compiled(model, regression_data(n=n, seed=3), loss=loss, loss_weights=loss_weights)


def weighted_outputs():
    """Two outputs, a list of losses and of `loss_weights` (41 parameters)."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((3,), dtype=F64)
    hidden = dense(4, activation="tanh")(inputs)
    model = keras.Model(inputs, [dense(2)(hidden), dense(3)(hidden)])
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N_SAMPLES, 3))
    y = [rng.standard_normal((N_SAMPLES, 2)), np.eye(3)[rng.integers(0, 3, N_SAMPLES)]]
    return compiled(
        model,
        (x, y),
        loss=["mse", keras.losses.CategoricalCrossentropy(from_logits=True)],
        loss_weights=[0.5, 2.0],
    )


def reduced(reduction):
    """`MeanSquaredError(reduction=...)` with per-sample weights (20 parameters)."""
    loss = keras.losses.MeanSquaredError(reduction=reduction)
    return compiled(mlp(seed=6), regression_data(seed=7, weighted=True), loss=loss)


def masked(reduction="sum_over_batch_size", weighted=False, n=N_SAMPLES):
    """`Masking` before a per-timestep regression (13 parameters); 4 steps, some masked."""
    keras.utils.set_random_seed(8)
    model = keras.Sequential(
        [
            keras.Input((4, 2), dtype=F64),
            keras.layers.Masking(0.0, dtype=F64),
            dense(3, activation="tanh"),
            dense(1),
        ]
    )
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n, 4, 2))
    keep = rng.uniform(size=(n, 4)) < 0.6
    keep[:, 0] = True
    x[~keep] = 0.0
    y = rng.standard_normal((n, 4, 1))
    sample_weight = rng.uniform(0.2, 2.0, (n, 4)) if weighted else None
    loss = keras.losses.MeanSquaredError(reduction=reduction)
    return compiled(model, (x, y, sample_weight), loss=loss)


def embedded():
    """`Embedding(mask_zero=True)` before a per-timestep regression (15 parameters)."""
    keras.utils.set_random_seed(10)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(6, 2, mask_zero=True, dtype=F64),
            dense(1),
        ]
    )
    rng = np.random.default_rng(11)
    tokens = rng.integers(0, 6, (N_SAMPLES, 5)).astype("int32")
    tokens[:, 0] = rng.integers(1, 6, N_SAMPLES)
    return compiled(model, (tokens, rng.standard_normal((N_SAMPLES, 5, 1))), loss="mse")


def ignoring_class():
    """`SparseCategoricalCrossentropy(ignore_class=0)` (24 parameters)."""
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 3, N_SAMPLES)
    labels[:2] = [0, 1]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    x = rng.standard_normal((N_SAMPLES, 3))
    return compiled(mlp(n_out=3, seed=13), (x, labels), loss=loss)


class QuarticPenalty(keras.layers.Layer):
    """The identity, adding a mean quartic penalty on its input through `add_loss`."""

    def call(self, inputs):
        self.add_loss(0.05 * ops.mean(ops.sum(inputs**4, axis=-1)))
        return inputs


class PenalizedModel(keras.Model):
    """A subclassed model adding losses in its own `call` and in a sublayer's."""

    def __init__(self):
        super().__init__(dtype=F64)
        self.hidden = dense(4, activation="tanh")
        self.penalty = QuarticPenalty(dtype=F64)
        self.out = dense(2)

    def call(self, inputs):
        hidden = self.penalty(self.hidden(inputs))
        self.add_loss(0.1 * ops.mean(ops.sum(hidden**2, axis=-1)))
        return self.out(hidden)


def with_add_loss():
    """Subclassed model and layer with `add_loss` (26 parameters)."""
    keras.utils.set_random_seed(14)
    model = PenalizedModel()
    data = regression_data(seed=15)
    model(data[0][:1])
    return compiled(model, data, loss="mse")


class CustomObjective(keras.Model):
    """A model whose `compute_loss` ignores the compiled loss."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        fit = ops.mean(ops.sum(ops.square(y_pred - y), axis=-1))
        smooth = 0.1 * ops.mean(ops.log(ops.cosh(y_pred)))
        return fit + smooth + ops.sum(self.losses)


def with_compute_loss():
    """An overridden `compute_loss`, with a regularizer (20 parameters); "mae" is compiled."""
    keras.utils.set_random_seed(16)
    inputs = keras.Input((3,), dtype=F64)
    hidden = dense(3, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-2))(inputs)
    model = CustomObjective(inputs, dense(2)(hidden))
    return compiled(model, regression_data(seed=17), loss="mae")


def named_dicts(n=N_SAMPLES):
    """Two named inputs, two named outputs, loss and `loss_weights` dicts (39 parameters)."""
    keras.utils.set_random_seed(18)
    a = keras.Input((2,), dtype=F64, name="a")
    b = keras.Input((3,), dtype=F64, name="b")
    hidden = dense(4, activation="tanh")(keras.layers.Concatenate(dtype=F64)([a, b]))
    outputs = {"u": dense(1, name="u")(hidden), "v": dense(2, name="v")(hidden)}
    model = keras.Model({"a": a, "b": b}, outputs)
    rng = np.random.default_rng(19)
    x = {"a": rng.standard_normal((n, 2)), "b": rng.standard_normal((n, 3))}
    y = {"u": rng.standard_normal((n, 1)), "v": rng.standard_normal((n, 2))}
    return compiled(
        model,
        (x, y),
        loss={"u": "mse", "v": "log_cosh"},
        loss_weights={"u": 2.0, "v": 0.5},
    )


CASES = {
    "regularizers": regularized,
    "loss_weights=[3]": partial(regularized, loss_weights=[3.0]),
    "two outputs with loss_weights": weighted_outputs,
    **{
        f"reduction={reduction}": partial(reduced, reduction)
        for reduction in ("sum", "sum_over_batch_size", "mean", "mean_with_sample_weight")
    },
    "Masking, per-timestep loss": masked,
    "mask_zero Embedding, per-timestep loss": embedded,
    "ignore_class=0": ignoring_class,
    "add_loss in subclassed model and layer": with_add_loss,
    "overridden compute_loss": with_compute_loss,
    "named inputs and outputs, loss dicts": named_dicts,
    "per-timestep sample_weight, masked": partial(masked, weighted=True),
    "per-timestep sample_weight, masked, mean_with_sample_weight": partial(
        masked, reduction="mean_with_sample_weight", weighted=True
    ),
}


# -------------------------------------------------------------- reference


def constant(data):
    return None if data is None else tf.nest.map_structure(tf.constant, data)


def objective(problem, data_term=None, model_losses=True):
    """Keras' training objective on all the data as one batch, a zero-argument callable.

    `data_term(y_true, y_pred)` replaces the compiled loss (then the objective
    is that plus ``model.losses``); ``model_losses=False`` leaves out
    ``model.losses``, which ``compute_loss`` sums in.
    """
    model, training = problem.model, problem.training
    x, y, sample_weight = (constant(d) for d in problem[1:4])

    def loss():
        y_pred = model(x, training=training)
        if data_term is None:
            value = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        else:
            value = data_term(y, y_pred) + sum(ops.sum(term) for term in model.losses)
        if not model_losses:
            value -= sum(ops.sum(term) for term in model.losses)
        return value

    return loss


def exact_moments(x, axes, keepdims):
    """``tf.nn.moments`` without its ``stop_gradient`` on the mean.

    That ``stop_gradient`` leaves first derivatives right (the variance's
    derivative w.r.t. the mean is zero) but drops a term of the second:
    nested tapes through ``tf.nn.moments`` (BatchNormalization in training
    mode, LayerNormalization) give a wrong Hessian.
    """
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    if not keepdims:
        mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
    return mean, variance


class Reference(NamedTuple):
    value: float
    gradient: np.ndarray
    hessian: np.ndarray


def reference(problem, variables=None, hessian=True, **objective_kwargs):
    """Value, gradient and dense Hessian of the objective w.r.t. `variables`, by GradientTape.

    Normalization statistics are differentiated twice (`exact_moments`).
    Non-trainable state a training-mode call updates (BatchNorm statistics)
    is restored afterwards.
    """
    model = problem.model
    variables = model.trainable_variables if variables is None else variables
    loss = objective(problem, **objective_kwargs)
    state = [v.numpy().copy() for v in model.non_trainable_variables]
    with mock.patch.object(keras_tf_nn, "_compute_moments", exact_moments):
        hessian = dense_reference(loss, variables) if hessian else None
        with tf.GradientTape() as tape:
            value = loss()
        grads = tape.gradient(value, [v.value for v in variables], unconnected_gradients="zero")
    gradient = np.concatenate([tf.convert_to_tensor(g).numpy().reshape(-1) for g in grads])
    for v, s in zip(model.non_trainable_variables, state, strict=True):
        v.assign(s)
    return Reference(float(value), gradient, hessian)


def assert_close(got, want, rtol=1e-10, atol=1e-12, err_msg=""):
    """`rtol` per entry, `atol` relative to the largest entry of `want`."""
    scale = max(float(np.abs(want).max()), np.finfo(float).tiny)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=err_msg)


def operator_matrix(H, block=False):
    """The operator's matrix: from `H.dense()` (block products) or one matvec per column."""
    if block:
        return H.dense()
    return np.column_stack([H.hvp(column) for column in np.eye(H.n)])


def assert_operator(H, ref, rtol=1e-10, atol=1e-12, seed=0, block=False):
    """The operator's matrix, three products, gradient and loss value against `ref`.

    `block`: the matrix from `H.dense()` and the products as one 3-column
    `H.hvp(V)`; otherwise single matvecs (the first block product of a
    Hessian costs seconds of tracing, so only some tests pay for it).
    Returns the matrix.
    """
    assert H.n == ref.hessian.shape[0]
    matrix = operator_matrix(H, block)
    assert_close(matrix, ref.hessian, rtol, atol, "dense")
    V = np.random.default_rng(seed).standard_normal((H.n, 3))
    products = H.hvp(V) if block else np.column_stack([H.hvp(v) for v in V.T])
    assert_close(products, ref.hessian @ V, rtol, atol, "hvp")
    assert_close(H.gradient(), ref.gradient, rtol, atol, "gradient")
    assert H.loss_value() == pytest.approx(ref.value, rel=rtol, abs=atol * abs(ref.value))
    return matrix


def from_problem(problem, **kwargs):
    return thl.Hessian.from_keras(
        problem.model,
        x=problem.x,
        y=problem.y,
        sample_weight=problem.sample_weight,
        training=problem.training,
        **kwargs,
    )


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request, float64_floatx):
    problem = CASES[request.param]()
    return problem, reference(problem)


# ------------------------------------------------------------ every case


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_operator_is_the_hessian_of_compute_loss(case, batch_size):
    problem, ref = case
    H = from_problem(problem, batch_size=batch_size)
    assert_operator(H, ref, block=batch_size == 3)


def test_linear_least_squares_with_l2_matches_the_analytic_hessian():
    """H = 2/N [X 1]ᵀ[X 1] + 2λ diag(1, 1, 1, 0): the reference and the operator."""
    keras.utils.set_random_seed(20)
    lam = 2.0**-5  # exact in float32: Keras casts the factor through a float32 tensor
    model = keras.Sequential(
        [keras.Input((3,), dtype=F64), dense(1, kernel_regularizer=keras.regularizers.L2(lam))]
    )
    x, y, _ = regression_data(n_out=1, seed=21)
    problem = compiled(model, (x, y), loss="mse")
    design = np.hstack([x, np.ones((N_SAMPLES, 1))])
    analytic = 2 / N_SAMPLES * design.T @ design + 2 * lam * np.diag([1.0, 1.0, 1.0, 0.0])
    ref = reference(problem)
    assert_close(ref.hessian, analytic, rtol=1e-13, atol=1e-14)
    w = np.concatenate([v.numpy().reshape(-1) for v in model.trainable_variables])
    residual = design @ w - y[:, 0]
    analytic_value = residual @ residual / N_SAMPLES + lam * w[:3] @ w[:3]
    assert ref.value == pytest.approx(analytic_value, rel=1e-13)
    H = from_problem(problem, batch_size=3)
    assert_close(operator_matrix(H), analytic, rtol=1e-12, atol=1e-14)
    assert H.loss_value() == pytest.approx(analytic_value, rel=1e-13)


# --------------------------------------------------------- explicit losses


@pytest.fixture(scope="module")
def regularized_case(float64_floatx):
    problem = regularized()
    return problem, reference(problem)


@pytest.fixture(scope="module")
def mae_compiled(float64_floatx):
    """The regularized model compiled with "mae", to be replaced by an explicit loss."""
    problem = regularized(loss="mae")
    return problem, reference(problem, data_term=keras.losses.MeanSquaredError())


@pytest.mark.parametrize(
    "loss",
    [
        "mse",
        keras.losses.MeanSquaredError(dtype=F64),
        lambda t, p: ops.mean(ops.square(t - p), axis=-1),
    ],
    ids=["name", "object", "callable"],
)
def test_explicit_loss_replaces_only_the_compiled_data_term(mae_compiled, loss):
    problem, ref = mae_compiled
    H = thl.Hessian.from_keras(problem.model, loss, x=problem.x, y=problem.y, batch_size=3)
    assert_operator(H, ref)


def test_explicit_loss_positionally(mae_compiled):
    problem, ref = mae_compiled
    assert_operator(thl.Hessian.from_keras(problem.model, "mse", problem.x, problem.y), ref)


def test_model_losses_false_leaves_out_the_regularizers(regularized_case):
    problem, full = regularized_case
    ref = reference(problem, model_losses=False)
    assert np.abs(ref.hessian - full.hessian).max() > 1e-3 * np.abs(full.hessian).max()
    assert_operator(from_problem(problem, batch_size=3, model_losses=False), ref)


@pytest.mark.parametrize("loss", ["mse", None], ids=["explicit", "compiled"])
def test_model_losses_false_with_an_explicit_or_compiled_loss(mae_compiled, loss):
    problem, _ = mae_compiled
    data_term = None if loss is None else keras.losses.MeanSquaredError()
    ref = reference(problem, data_term=data_term, model_losses=False)
    H = thl.Hessian.from_keras(
        problem.model, loss, x=problem.x, y=problem.y, batch_size=3, model_losses=False
    )
    assert_operator(H, ref)


# ----------------------------------------------------------- data sources


class Batches(keras.utils.PyDataset):
    """Tuples of arrays in batches of `batch_size`."""

    def __init__(self, arrays, batch_size):
        super().__init__()
        self.arrays, self.batch_size = arrays, batch_size

    def __len__(self):
        return math.ceil(len(self.arrays[0]) / self.batch_size)

    def __getitem__(self, index):
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return tuple(a[batch] for a in self.arrays)


@pytest.fixture(scope="module")
def regression(float64_floatx):
    """A regression with and without per-sample weights: reference and array operator."""
    model = compiled(mlp(seed=22), regression_data(seed=23), loss="mse").model
    x, y, sample_weight = regression_data(seed=23, weighted=True)
    results = {}
    for weights in (sample_weight, None):
        problem = Problem(model, x, y, weights)
        arrays = from_problem(problem, batch_size=4)
        results[weights is not None] = (
            problem,
            reference(problem),
            (operator_matrix(arrays), arrays.gradient(), arrays.loss_value()),
        )
    return results


def dataset(*arrays):
    return tf.data.Dataset.from_tensor_slices(arrays)


SOURCES = {
    "Dataset (x, y, sw), batched": (True, lambda x, y, w: (dataset(x, y, w).batch(4), {})),
    "Dataset (x, y, sw), unbatched": (True, lambda x, y, w: (dataset(x, y, w), {})),
    "Dataset (x, y), batched": (False, lambda x, y, w: (dataset(x, y).batch(4), {})),
    "Dataset (x, y), unbatched": (False, lambda x, y, w: (dataset(x, y), {})),
    "PyDataset (x, y, sw)": (True, lambda x, y, w: (Batches((x, y, w), 4), {})),
    "PyDataset (x, y)": (False, lambda x, y, w: (Batches((x, y), 4), {})),
    "DataFrame": (
        True,
        lambda x, y, w: (
            pd.DataFrame(x, columns=["p", "q", "r"]),
            {"y": y, "sample_weight": w, "batch_size": 4},
        ),
    ),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_data_sources_give_the_operator_of_arrays(regression, source):
    weighted, make = SOURCES[source]
    problem, ref, (dense_arrays, gradient_arrays, value_arrays) = regression[weighted]
    data, kwargs = make(problem.x, problem.y, problem.sample_weight)
    H = thl.Hessian.from_keras(problem.model, x=data, **kwargs)
    matrix = assert_operator(H, ref, block=source == "Dataset (x, y, sw), batched")
    assert_close(matrix, dense_arrays, rtol=1e-13, atol=1e-15)
    assert_close(H.gradient(), gradient_arrays, rtol=1e-13, atol=1e-15)
    assert H.loss_value() == pytest.approx(value_arrays, rel=1e-13)


# --------------------------------------------------- non-additive objectives


def batchnorm(training=True):
    """BatchNormalization between two Dense layers (29 parameters)."""
    keras.utils.set_random_seed(24)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype=F64),
            dense(4),
            keras.layers.BatchNormalization(dtype=F64),
            keras.layers.Activation("tanh", dtype=F64),
            dense(1),
        ]
    )
    problem = compiled(model, regression_data(n_out=1, seed=25), loss="mse")
    return problem._replace(training=training)


def dice_loss(y_true, y_pred):
    """One scalar per batch: 1 - 2|y ∩ ŷ| / (|y| + |ŷ|)."""
    overlap = ops.sum(y_true * y_pred)
    return 1.0 - 2.0 * overlap / (ops.sum(y_true) + ops.sum(y_pred))


def dice():
    """A batch-level Dice loss on a sigmoid output (16 parameters)."""
    rng = np.random.default_rng(26)
    x = rng.standard_normal((N_SAMPLES, 3))
    y = (rng.uniform(size=(N_SAMPLES, 1)) < 0.5).astype(F64)
    model = mlp(n_out=1, seed=27, activation="sigmoid")
    return compiled(model, (x, y), loss=dice_loss)


NON_ADDITIVE = {"BatchNormalization, training=True": batchnorm, "Dice loss": dice}


@pytest.fixture(scope="module", params=list(NON_ADDITIVE), ids=list(NON_ADDITIVE))
def non_additive(request, float64_floatx):
    problem = NON_ADDITIVE[request.param]()
    return problem, reference(problem)


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_non_additive_objective_in_batches_raises(non_additive, batch_size):
    problem, _ = non_additive
    with pytest.raises(ValueError, match="batch_size"):
        from_problem(problem, batch_size=batch_size)


def test_non_additive_objective_in_batches_when_allowed(non_additive):
    problem, ref = non_additive
    H = from_problem(problem, batch_size=3, allow_batch_dependence=True)
    assert H.n == ref.hessian.shape[0]
    assert np.isfinite(H.hvp(np.ones(H.n))).all()


def test_non_additive_objective_in_one_batch_is_exact(non_additive):
    problem, ref = non_additive
    state = [v.numpy().copy() for v in problem.model.variables]
    assert_operator(from_problem(problem), ref)
    for v, s in zip(problem.model.variables, state, strict=True):
        np.testing.assert_array_equal(v.numpy(), s, err_msg=v.path)


def test_batchnorm_in_inference_mode_is_additive(float64_floatx):
    problem = batchnorm(training=False)
    assert_operator(from_problem(problem, batch_size=3), reference(problem))


def layer_normalized():
    """LayerNormalization between two Dense layers (29 parameters)."""
    keras.utils.set_random_seed(34)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype=F64),
            dense(4),
            keras.layers.LayerNormalization(dtype=F64),
            keras.layers.Activation("tanh", dtype=F64),
            dense(1),
        ]
    )
    return compiled(model, regression_data(n_out=1, seed=35), loss="mse")


def finite_difference_hvp(problem, direction, step=1e-5):
    """Central differences of the tape gradient (first derivatives are exact) along `direction`."""
    variables = problem.model.trainable_variables
    start = [v.numpy().copy() for v in variables]
    sizes = [math.prod(v.shape) for v in variables]
    steps = np.split(direction, np.cumsum(sizes)[:-1])

    def gradient_at(t):
        for v, w, dw in zip(variables, start, steps, strict=True):
            v.assign(w + t * dw.reshape(w.shape))
        return reference(problem, hessian=False).gradient

    try:
        return (gradient_at(step) - gradient_at(-step)) / (2 * step)
    finally:
        for v, w in zip(variables, start, strict=True):
            v.assign(w)


@pytest.mark.parametrize(
    ("build", "batch_size"),
    [(layer_normalized, 3), (batchnorm, None)],
    ids=["LayerNormalization", "BatchNormalization, training=True"],
)
def test_normalization_statistics_are_differentiated_twice(float64_floatx, build, batch_size):
    """Nested tapes through ``tf.nn.moments`` miss a second-order term (`exact_moments`)."""
    problem = build()
    ref = reference(problem)
    direction = np.random.default_rng(36).standard_normal(ref.hessian.shape[0])
    assert_close(ref.hessian @ direction, finite_difference_hvp(problem, direction), 1e-6, 1e-7)
    assert_operator(from_problem(problem, batch_size=batch_size), ref)


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def regression_problem(float64_floatx):
    return compiled(mlp(seed=28), regression_data(seed=29), loss="mse")


def test_single_loss_with_dict_targets_applies_to_every_output(float64_floatx):
    # As model.compile(loss="mse") on a two-output model: "mse" on each output.
    problem = named_dicts()
    H = thl.Hessian.from_keras(problem.model, "mse", x=problem.x, y=problem.y)
    problem = compiled(problem.model, (problem.x, problem.y, None), loss="mse")
    assert_operator(H, reference(problem))


def test_labels_the_loss_cannot_take_raise(regression_problem):
    labels = np.full((N_SAMPLES, 2), "a")
    with pytest.raises((ValueError, TypeError), match="`y`"):
        thl.Hessian.from_keras(regression_problem.model, x=regression_problem.x, y=labels)


def test_uncompiled_model_without_loss_raises(float64_floatx):
    x, y, _ = regression_data(seed=30)
    with pytest.raises((ValueError, TypeError), match="`loss`"):
        thl.Hessian.from_keras(mlp(seed=31), x=x, y=y)


def test_strings_for_a_numeric_input_raise(regression_problem):
    strings = np.full((N_SAMPLES, 3), "a")
    with pytest.raises((ValueError, TypeError), match="`x`"):
        thl.Hessian.from_keras(regression_problem.model, x=strings, y=regression_problem.y)


def test_dataset_without_targets_for_a_loss_that_needs_them_raises(regression_problem):
    inputs_only = tf.data.Dataset.from_tensor_slices((regression_problem.x,)).batch(4)
    with pytest.raises((ValueError, TypeError), match=r"`(x|y)`"):
        thl.Hessian.from_keras(regression_problem.model, x=inputs_only)


# -------------------------------------------------------------- subsets


def block(ref, variables, chosen):
    """The sub-block of `ref` (w.r.t. `variables`) for the variables `chosen`."""
    offsets = np.cumsum([0] + [math.prod(v.shape) for v in variables])
    ranges = {
        id(v): range(a, b) for v, a, b in zip(variables, offsets[:-1], offsets[1:], strict=True)
    }
    index = np.concatenate([ranges[id(v)] for v in chosen])
    return Reference(ref.value, ref.gradient[index], ref.hessian[np.ix_(index, index)])


SUBSETS = {
    "variables": (
        lambda m: [m.get_layer("out").kernel, m.get_layer("out").bias],
        lambda m: [m.get_layer("out").kernel, m.get_layer("out").bias],
    ),
    "layers": (
        lambda m: [m.get_layer("out")],
        lambda m: [m.get_layer("out").kernel, m.get_layer("out").bias],
    ),
    "layer names": (
        lambda m: ["out"],
        lambda m: [m.get_layer("out").kernel, m.get_layer("out").bias],
    ),
    "a variable and a layer name": (
        lambda m: [m.get_layer("hidden").bias, "out"],
        lambda m: [m.get_layer("hidden").bias, m.get_layer("out").kernel, m.get_layer("out").bias],
    ),
}


@pytest.mark.parametrize("subset", list(SUBSETS))
def test_variables_give_the_hessian_block(regularized_case, subset):
    problem, ref = regularized_case
    select, expected = SUBSETS[subset]
    H = from_problem(problem, variables=select(problem.model), batch_size=3)
    everything = problem.model.trainable_variables
    assert_operator(H, block(ref, everything, expected(problem.model)))


@pytest.mark.parametrize("variables", [None, ["hidden", "out"]], ids=["all", "named"])
def test_frozen_layer_is_left_out(float64_floatx, variables):
    problem = regularized()
    full = reference(problem)
    everything = problem.model.trainable_variables
    out = problem.model.get_layer("out")
    problem.model.get_layer("hidden").trainable = False
    assert len(problem.model.trainable_variables) == 2
    frozen = reference(problem)  # Keras drops the frozen weights' regularizers from its loss
    expected = block(full, everything, [out.kernel, out.bias])._replace(value=frozen.value)
    assert_close(frozen.hessian, expected.hessian, rtol=1e-13, atol=1e-15)
    assert_operator(from_problem(problem, variables=variables, batch_size=3), expected)


# ------------------------------------------------------------- precision

ACCURACY = re.compile(r"(?is)accura.*(\de-0?[23]|0\.00?1)|(\de-0?[23]|0\.00?1).*accura")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_warns_once_with_the_expected_accuracy(float64_floatx, policy):
    # The public setter cannot restore an unset global policy, and an unset
    # one is what makes other modules' layers follow `floatx`.
    from keras.src.backend.common import global_state

    previous = global_state.get_global_attribute("dtype_policy")
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(32)
        model = keras.Sequential(
            [
                keras.Input((3,), dtype="float32"),
                keras.layers.Dense(4, activation="tanh"),
                keras.layers.Dense(2),
            ]
        )
    finally:
        global_state.set_global_attribute("dtype_policy", previous)
    assert model.layers[0].dtype_policy.name == policy
    x, y, _ = regression_data(seed=33)
    problem = compiled(model, (x.astype("float32"), y.astype("float32")), loss="mse")
    exact = compiled(mlp(n_hidden=4, seed=32), (x, y), loss="mse")
    for v64, v in zip(exact.model.trainable_variables, model.trainable_variables, strict=True):
        v64.assign(np.asarray(v.numpy(), dtype=F64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        H = from_problem(problem)
        assert len([w for w in caught if ACCURACY.search(str(w.message))]) == 1
        H.hvp(np.ones(H.n))
        dense = H.dense()
        H.gradient()
    accuracy_warnings = [w for w in caught if ACCURACY.search(str(w.message))]
    assert len(accuracy_warnings) == 1
    assert issubclass(accuracy_warnings[0].category, UserWarning)
    want = reference(exact).hessian
    assert np.linalg.norm(dense - want) < 0.1 * np.linalg.norm(want)
