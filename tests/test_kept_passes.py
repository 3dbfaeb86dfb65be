"""Products outside a fixed point keep the passes of their point (`Hessian.keep_passes`).

The reference of every check is a product from scratch (``keep_passes =
False``, itself checked against nested-tape dense Hessians in test_hessian
and test_keras_objective) or a dense Hessian built by nested tapes.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhess_linop as thl
from test_fixed_point import CASES, _case, _data, _hessian, _make_products_uncuttable, _mlp
from tfhess_linop import _fixed_point
from tfhess_linop._split_product import SplitProduct


def _counting_loss(calls):
    """``2 x^3 y^3`` whose forward pass calls back into Python (counted in `calls`)."""

    def scale(x):
        calls.append(1)
        return np.float64(2.0)

    def loss(w):
        factor = tf.numpy_function(scale, [tf.constant(0.0, tf.float64)], tf.float64)
        return tf.reshape(factor, []) * w[0] ** 3 * w[1] ** 3

    return loss


# The plain blocks of the RNN warn that they loop over columns.
@pytest.mark.filterwarnings("ignore::tfhess_linop.PerformanceWarning")
@pytest.mark.parametrize(("kind", "batch_size"), CASES)
def test_kept_products_equal_products_from_scratch(kind, batch_size):
    model, x, y, options = _case(kind)
    scratch = _hessian(model, x, y, batch_size=batch_size, **options)
    H = thl.Hessian.from_keras(model, x=x, y=y, batch_size=batch_size, **options)
    assert H.keep_passes and not scratch.keep_passes
    V = np.random.default_rng(4).standard_normal((H.n, 3))
    state = [v.numpy().copy() for v in model.variables]
    reference, reference_one = scratch.hvp(V), scratch.hvp(V[:, 0])
    kept = [H.hvp(V), H.hvp(V[:, 0]), H.hvp(V[:, 1:]), H.hvp(V)]
    atol = 1e-13 * np.abs(reference).max()
    wanted = [reference, reference_one, reference[:, 1:], reference]
    for got, want in zip(kept, wanted, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    np.testing.assert_array_equal(kept[3], kept[0])  # the same passes, the same products
    assert H._kept.active and H._kept.starts == 1
    # Nothing of the model changed: parameters, BatchNorm statistics, seeds.
    for before, variable in zip(state, model.variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)


def test_every_change_of_the_point_is_seen():
    model = _mlp(batch_norm=True)
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y, batch_size=10)  # 3 batches
    reference = _hessian(model, x, y).dense
    eye = np.eye(H.n)
    np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
    H.set_parameters(H.parameters() + 0.1)
    np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
    # An optimizer step, which the Hessian does not see coming.
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x))
    variables = model.trainable_variables
    keras.optimizers.SGD(0.5).apply_gradients(
        zip(tape.gradient(loss, variables), variables, strict=True)
    )
    np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
    # One entry of one variable; a BatchNorm statistic (not a parameter).
    bias = model.layers[-1].bias
    bias.assign(bias.numpy() + np.array([0.0, 0.0, 1e-3]))
    np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
    statistics = model.layers[1].moving_variance
    statistics.assign(statistics.numpy() * 4.0)
    np.testing.assert_allclose(H.hvp(eye), reference(), atol=1e-12)
    assert H._kept.starts == 5


def test_a_stale_product_is_not_computed():
    # After a change, the second pass on the old residuals says so and
    # returns no product (zeros): the pass itself is skipped in the graph.
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
    np.testing.assert_allclose(H.hvp(np.array([1.0, 0.0])), [12.0, 18.0], rtol=1e-15)
    split, residuals = H._split, H._kept._residuals[0]
    rows = tf.constant([[1.0, 0.0]], tf.float64)
    hv, stale = split.second_pass(rows, residuals)
    assert not stale
    np.testing.assert_allclose(hv, [[12.0, 18.0]], rtol=1e-15)
    w.assign([2.0, 1.0])
    hv, stale = split.second_pass(rows, residuals)
    assert stale
    np.testing.assert_array_equal(hv, [[0.0, 0.0]])
    np.testing.assert_allclose(H.hvp(np.array([1.0, 0.0])), [24.0, 72.0], rtol=1e-15)


def test_a_product_at_a_new_point_is_one_call(monkeypatch):
    # The first product at a point returns the residuals with the product
    # (one graph call); after an outside change, the stale check is one
    # more call of the second pass, which computes nothing.
    calls = []
    for name in ("fresh", "second_pass"):
        method = getattr(SplitProduct, name)

        def counted(self, *args, _name=name, _method=method):
            calls.append(_name)
            return _method(self, *args)

        monkeypatch.setattr(SplitProduct, name, counted)
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
    e = np.array([1.0, 0.0])
    H.hvp(e)
    H.hvp(e)
    assert calls == ["fresh", "second_pass"]
    calls.clear()
    H.set_parameters([2.0, 1.0])  # seen by the Hessian: the passes are dropped
    np.testing.assert_allclose(H.hvp(e), [24.0, 72.0], rtol=1e-15)
    assert calls == ["fresh"]
    calls.clear()
    w.assign([1.0, 2.0])  # not seen: the stale check finds it
    np.testing.assert_allclose(H.hvp(e), [96.0, 72.0], rtol=1e-15)
    assert calls == ["second_pass", "fresh"]


def test_points_that_move_before_every_product_skip_the_stale_check(monkeypatch):
    # One product per point (a training loop): after two points in a row
    # that answered a single product, products start afresh without the
    # stale check, which one product in four still makes; a point that
    # lasts again brings the check back.
    calls = []
    for name in ("fresh", "second_pass"):
        method = getattr(SplitProduct, name)

        def counted(self, *args, _name=name, _method=method):
            calls.append(_name[0])  # "f" or "s"
            return _method(self, *args)

        monkeypatch.setattr(SplitProduct, name, counted)
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
    e = np.array([1.0, 0.0])

    def check():  # H e of 2 a^3 b^3 is (12 a b^3, 18 a^2 b^2)
        a, b = w.numpy()
        np.testing.assert_allclose(H.hvp(e), [12 * a * b**3, 18 * a**2 * b**2], rtol=1e-14)

    steps = []
    for step in range(7):
        w.assign([1.0 + 0.1 * step, 1.0])
        calls.clear()
        check()
        steps.append("".join(calls))
    # The first product at a point is one fresh call; "sf": stale, then fresh.
    assert steps == ["f", "sf", "sf", "f", "f", "f", "sf"]
    # The point now lasts: up to three more products start afresh, then the
    # check finds the passes current and products are the second pass alone.
    calls.clear()
    for _ in range(6):
        check()
    assert "".join(calls) == "fffsss"
    assert H._kept.starts == 10


def test_the_primal_passes_run_once_per_point_unless_turned_off():
    calls = []
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    H = thl.Hessian(_counting_loss(calls), w)
    eye = np.eye(2)
    products = [H.hvp(eye[0]), H.hvp(eye), H.hvp(eye[1])]
    assert len(calls) == 1
    np.testing.assert_allclose(products[1], [[12.0, 18.0], [18.0, 12.0]], rtol=1e-15)
    H.keep_passes = False
    assert H._kept._residuals is None  # dropped at once
    calls.clear()
    off = [H.hvp(eye[0]), H.hvp(eye[1])]
    assert len(calls) == 2
    np.testing.assert_allclose(off, [products[0], products[2]], rtol=1e-15)
    H.keep_passes = True
    calls.clear()
    H.hvp(eye[0]), H.hvp(eye[1])
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [1, 0, None, "yes"])
def test_keep_passes_takes_only_booleans(bad):
    H = thl.Hessian(lambda w: tf.reduce_sum(w**3), tf.Variable([1.0, 2.0], dtype=tf.float64))
    with pytest.raises(TypeError, match="`keep_passes` must be True or False"):
        H.keep_passes = bad
    assert H.keep_passes is True


def test_over_the_kept_budget_products_are_from_scratch_without_a_warning(monkeypatch):
    # pytest turns any warning into an error here: the kept passes are an
    # optimisation of plain products, and over their budget products stay
    # what they were.
    monkeypatch.setattr(_fixed_point, "kept_memory_budget", lambda: 100)
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y)
    v = np.random.default_rng(5).standard_normal(H.n)
    result = H.hvp(v)
    assert H._kept.active is False and H._kept.estimated_bytes > 100
    np.testing.assert_array_equal(result, _hessian(model, x, y).hvp(v))


def test_a_product_that_cannot_be_cut_is_from_scratch_without_a_warning(monkeypatch):
    _make_products_uncuttable(monkeypatch)
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y)
    V = np.random.default_rng(9).standard_normal((H.n, 2))
    result = H.hvp(V)
    assert H._kept.active is False and "could not be cut" in H._kept.reason
    np.testing.assert_array_equal(result, _hessian(model, x, y).hvp(V))


@pytest.mark.parametrize("options", [{"mode": "forward-over-reverse"}, {"jit_compile": True}])
def test_forward_mode_and_xla_do_not_keep_the_passes(options):
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y, **options)
    v = np.random.default_rng(6).standard_normal(H.n)
    result = H.hvp(v)
    assert H._kept.active is False and "not taken" in H._kept.reason
    reference = _hessian(model, x, y).hvp(v)
    np.testing.assert_allclose(result, reference, rtol=0, atol=1e-13 * np.abs(reference).max())


def test_a_fixed_point_block_takes_over_the_kept_passes():
    calls = []
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    H = thl.Hessian(_counting_loss(calls), w)
    H.hvp(np.eye(2))
    assert H._kept._residuals is not None
    with H.fixed_point() as point:
        # The block's own passes; the kept ones are dropped (their memory).
        assert H._kept._residuals is None
        np.testing.assert_allclose(H.hvp(np.eye(2)), [[12.0, 18.0], [18.0, 12.0]])
        H.hvp(np.eye(2))
    assert point.starts == 1 and len(calls) == 2
    np.testing.assert_allclose(H.hvp(np.eye(2)), [[12.0, 18.0], [18.0, 12.0]])
    assert len(calls) == 3 and H._kept.starts == 2


@pytest.mark.parametrize("fixed", [False, True])
def test_a_request_written_over_by_its_product_after_a_change(fixed):
    # `out` is the request itself and the point moved since the passes:
    # the stale check writes nothing, and the product is made from the
    # request as it was.
    model = _mlp()
    x, y = _data()
    H = thl.Hessian.from_keras(model, x=x, y=y, batch_size=7)
    block = np.asfortranarray(np.random.default_rng(7).standard_normal((H.n, 3)))
    with H.fixed_point() if fixed else H.at(H.parameters()):
        H.hvp(block)
        bias = model.layers[-1].bias
        bias.assign(bias.numpy() + 0.5)
        reference = _hessian(model, x, y).hvp(block)
        aliased = block.copy(order="F")
        assert H.hvp(aliased, out=aliased) is aliased
    np.testing.assert_allclose(aliased, reference, rtol=0, atol=1e-13 * np.abs(reference).max())
