"""Blocks of Hessian-vector products on every kind of model.

Embedding gradients are ``tf.IndexedSlices``, and recurrent layers run
``while`` loops that ``tf.vectorized_map`` cannot vectorise: single
products, blocks and dense Hessians of these models must still equal an
independent dense reference, with one warning where blocks fall back to a
loop. Tracing dominates the cost here, so each Hessian is built once and
shared by the tests (`hessian`).
"""

import contextlib
import functools
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhess_linop as thl
from conftest import dense_reference, mse_mean
from tfhess_linop._engine import PerformanceWarning

RTOL = 1e-10
SAMPLES = 7
VOCABULARY = 6
STEPS = 4
FEATURES = 2
UNITS = 3


def embedding_dense():
    inputs = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, 3, dtype="float64")(inputs)
    h = keras.layers.GlobalAveragePooling1D(dtype="float64")(h)
    return keras.Model(inputs, keras.layers.Dense(2, activation="tanh", dtype="float64")(h))


def embedding_attention():
    inputs = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, 4, dtype="float64")(inputs)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2, dtype="float64")(h, h)
    h = keras.layers.GlobalAveragePooling1D(dtype="float64")(h)
    return keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(h))


def recurrent(make_layer):
    def build():
        inputs = keras.Input((STEPS, FEATURES), dtype="float64")
        h = make_layer()(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(h))

    return build


BUILDERS = {
    "embedding": embedding_dense,
    "attention": embedding_attention,
    "lstm": recurrent(lambda: keras.layers.LSTM(UNITS, dtype="float64")),
    "gru": recurrent(lambda: keras.layers.GRU(UNITS, dtype="float64")),
    "simple_rnn": recurrent(lambda: keras.layers.SimpleRNN(UNITS, dtype="float64")),
    "bidirectional": recurrent(
        lambda: keras.layers.Bidirectional(keras.layers.LSTM(2, dtype="float64"), dtype="float64")
    ),
}
RECURRENT = {"lstm", "gru", "simple_rnn", "bidirectional"}

# Uneven batches (3, 3, 1) for most models; all samples at once for one
# model of each family (tracing is the cost, and batching happens outside
# the compiled functions).
CASES = [
    ("embedding", None),
    ("embedding", 3),
    ("attention", 3),
    ("lstm", None),
    ("gru", 3),
    ("simple_rnn", 3),
    ("bidirectional", 3),
]


@functools.cache
def problem(name):
    """A model, its data and its dense reference Hessian (nested GradientTapes)."""
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    rng = np.random.default_rng(0)
    if name in RECURRENT:
        x = rng.standard_normal((SAMPLES, STEPS, FEATURES))
    else:
        x = rng.integers(0, VOCABULARY, (SAMPLES, STEPS)).astype("int32")
    y = rng.standard_normal((SAMPLES, 2))
    reference = dense_reference(mse_mean(model, x, y), model.trainable_variables)
    return model, x, y, reference


class _Counter(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        self.count += 1


@functools.cache
def hessian(name, batch_size, mode="auto"):
    """The Hessian, after its first block product (which chooses the block's route).

    Returns the Hessian, the block `V`, ``H.hvp(V)``, and the number of
    TensorFlow log records that first block call emitted.
    """
    model, x, y, _ = problem(name)
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=batch_size, mode=mode)
    H.keep_passes = False  # the routes of products from scratch (kept passes: below)
    V = np.random.default_rng(1).standard_normal((H.n, 4))
    counter = _Counter()
    tf.get_logger().addHandler(counter)
    try:
        with expected_warnings(name, mode):
            block = H.hvp(V)
    finally:
        tf.get_logger().removeHandler(counter)
    return H, V, block, counter.count


def expected_warnings(name, mode):
    """The warning of a vectorised block that falls back to a loop (recurrent models).

    "auto" blocks are loops from the start, so they never warn. Elsewhere no
    warning is expected (pytest turns any warning into an error).
    """
    if name not in RECURRENT or mode == "auto":
        return contextlib.nullcontext()
    return pytest.warns(
        PerformanceWarning,
        match=r"vectorized HVP blocks are not supported by this model \(while loop: .*"
        "column by column",
    )


def assert_close(actual, desired, reference):
    scale = np.abs(reference).max()
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.parametrize(("name", "batch_size"), CASES)
def test_blocks_and_dense_match_single_products_and_reference(name, batch_size):
    _, _, _, reference = problem(name)
    H, V, block, log_records = hessian(name, batch_size)
    assert H.n <= 2000
    assert log_records == 0
    singles = np.column_stack([H.hvp(V[:, j]) for j in range(V.shape[1])])
    assert_close(H.dense(block_size=5), reference, reference)
    assert_close(block, reference @ V, reference)
    assert_close(block, singles, reference)
    for k in (1, 2, 3):
        assert_close(H.hvp(V[:, :k]), reference @ V[:, :k], reference)
    for function in (H._engine.hvp, H._engine.hvp_block):
        assert function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize(("name", "batch_size"), CASES)
def test_kept_passes_match_the_reference(name, batch_size):
    # Products outside a fixed point keep the passes of their point: the
    # same values, from one start, for blocks, single products and dense().
    model, x, y, reference = problem(name)
    H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=batch_size)
    V = np.random.default_rng(1).standard_normal((H.n, 4))
    assert_close(H.hvp(V), reference @ V, reference)
    singles = np.column_stack([H.hvp(V[:, j]) for j in range(V.shape[1])])
    assert_close(singles, reference @ V, reference)
    assert_close(H.dense(block_size=5), reference, reference)
    assert H._kept.active and H._kept.starts == 1


@pytest.mark.parametrize("mode", ["reverse-over-reverse", "forward-over-reverse"])
def test_every_mode_on_embeddings(mode):
    _, _, _, reference = problem("embedding")
    H, V, block, _ = hessian("embedding", 3, mode)
    assert_close(block, reference @ V, reference)
    assert_close(H.hvp(V[:, 0]), reference @ V[:, 0], reference)
    assert_close(H.action(V[:, 1])[1], reference @ V[:, 1], reference)


def test_forward_mode_through_a_while_loop_falls_back_to_reverse():
    _, _, _, reference = problem("lstm")
    H, V, block, _ = hessian("lstm", 3, "forward-over-reverse")
    assert_close(block, reference @ V, reference)
    with pytest.warns(PerformanceWarning, match="forward-over-reverse products are not supported"):
        hv = H.hvp(V[:, 0])
    assert_close(hv, reference @ V[:, 0], reference)


def test_hutchpp_trace_equals_the_estimate_on_the_reference():
    _, _, _, reference = problem("lstm")
    H, _, _, _ = hessian("lstm", None)
    estimate = thl.hutchpp_trace(thl.as_linop(H), 30, rng=7)
    expected = thl.hutchpp_trace(reference, 30, rng=7)
    assert_close(estimate.estimate, expected.estimate, reference)
    assert_close(estimate.standard_error, expected.standard_error, reference)


def test_each_function_is_traced_once_with_a_looped_block():
    H, _, _, _ = hessian("lstm", None)
    H.keep_passes = False  # the functions of products from scratch
    A = thl.as_linop(H)
    rng = np.random.default_rng(2)
    for _ in range(2):
        H.loss_value()
        H.gradient()
        H.action(rng.standard_normal(H.n))
        A.matvec(rng.standard_normal(H.n))
        for k in (2, 5):
            A.matmat(rng.standard_normal((H.n, k)))
    H.dense(block_size=7)
    assert [f.experimental_get_tracing_count() for f in H._engine.functions] == [1] * 5
