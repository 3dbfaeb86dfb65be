"""`tfhess_linop.keras.CurvatureMonitor` logs the Hessian Keras trains, and changes nothing.

The reference at each epoch (or step) is a dense Hessian by nested
``tf.GradientTape``s (``tape.jacobian`` of the gradient) of Keras' own
``model.compute_loss`` on the monitor's data as one batch, taken by a second
callback that runs right after the monitor, at the same weights; its
eigenvalues come from `numpy.linalg.eigvalsh`, its trace from `numpy.trace`.
One small float64 fit, shared by the module, carries several monitors.
"""

import csv
import math
import random
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhess_linop as thl
from tfhess_linop.keras import CurvatureMonitor

F64 = "float64"
N_TRAIN, N_MONITOR, EPOCHS, BATCH = 40, 24, 2, 16  # 3 steps per epoch


def float64_model(seed=0):
    """A 3-4-2 tanh MLP in float64 (26 parameters), compiled with a float64 MSE."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype=F64),
            keras.layers.Dense(4, activation="tanh", dtype=F64),
            keras.layers.Dense(2, dtype=F64),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.2), loss=keras.losses.MeanSquaredError(dtype=F64)
    )
    return model


def dense_objective_hessian(model, x, y):
    """The Hessian of ``model.compute_loss`` on (x, y) as one batch, by nested tapes."""
    variables = model.trainable_variables
    x, y = tf.constant(x), tf.constant(y)
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False), training=False)
        gradient = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    rows = outer.jacobian(gradient, variables, experimental_use_pfor=False)
    n = int(gradient.shape[0])
    return np.concatenate([tf.reshape(r, (n, -1)).numpy() for r in rows], axis=1)


class DenseReference(keras.callbacks.Callback):
    """The dense Hessian after each step (the last one of an epoch is the epoch's)."""

    def __init__(self, x, y, steps):
        super().__init__()
        self.x, self.y, self.steps, self.after_step = x, y, steps, {}
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step in self.steps:
            self.after_step[self.step] = dense_objective_hessian(self.model, self.x, self.y)


def data(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], x[:, 0] - 0.5 * x[:, 2]], axis=1)
    return x, y


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit carrying four monitors, a dense reference and a CSVLogger."""
    x, y = data(1, N_TRAIN)
    xm, ym = data(2, N_MONITOR)
    model = float64_model()
    n = 26
    monitors = {
        # exact trace (as many products as parameters), both ends, every epoch
        "exact": CurvatureMonitor(xm, ym, k=2, smallest=True, trace_matvecs=n, prefix="exact"),
        # the same data as a batched dataset, Hutch++ with fewer products,
        # every second step across epochs
        "steps": CurvatureMonitor(
            tf.data.Dataset.from_tensor_slices((xm, ym)).batch(7),
            trace_matvecs=12,
            every=2,
            unit="step",
            prefix="steps",
        ),
    }
    reference = DenseReference(xm, ym, steps={2, 3, 4, 6})
    path = tmp_path_factory.mktemp("monitor") / "log.csv"
    history = model.fit(
        x,
        y,
        epochs=EPOCHS,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        callbacks=[*monitors.values(), reference, keras.callbacks.CSVLogger(str(path))],
    )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert reference.step == 3 * EPOCHS
    at_epoch_end = [reference.after_step[3], reference.after_step[6]]
    return dict(
        history=history.history,
        csv=rows,
        monitors=monitors,
        after_step=reference.after_step,
        at_epoch_end=at_epoch_end,
    )


def _close(logged, exact, scale):
    return np.allclose(logged, exact, rtol=1e-9, atol=1e-9 * scale)


def test_logged_eigenvalues_and_trace_are_the_dense_hessians(fitted):
    history = fitted["history"]
    for epoch, H in enumerate(fitted["at_epoch_end"]):
        eigenvalues = np.linalg.eigvalsh((H + H.T) / 2)
        scale = np.abs(eigenvalues).max()
        logged = [history[f"exact_eig_{i}"][epoch] for i in (1, 2)]
        assert _close(logged, eigenvalues[::-1][:2], scale), epoch
        assert _close(history["exact_eig_min"][epoch], eigenvalues[0], scale)
        assert _close(history["exact_trace"][epoch], np.trace(H), scale)
    # The weights moved between the epochs, and the logged values followed them.
    assert history["exact_eig_1"][0] != history["exact_eig_1"][1]
    assert all(r["hvps"] <= 300 for r in fitted["monitors"]["exact"].records)


def test_step_monitor_on_a_dataset_evaluates_every_second_step(fitted):
    monitor, after_step = fitted["monitors"]["steps"], fitted["after_step"]
    assert [r["step"] for r in monitor.records] == [2, 4, 6]
    assert [r["epoch"] for r in monitor.records] == [0, 1, 1]
    for record in monitor.records:
        H = after_step[record["step"]]
        assert _close(record["eigenvalues"][0], np.linalg.eigvalsh(H)[-1], abs(H).sum())
        # Hutch++ with the monitor's seed: the same probes as on the dense matrix,
        # and within its error of the exact trace.
        same_probes = thl.hutchpp_trace(H, 12, rng=0)
        assert np.isclose(record["trace"], same_probes.estimate, rtol=1e-9)
        assert abs(record["trace"] - np.trace(H)) < 4 * record["trace_standard_error"]
    # Each epoch logs the latest evaluation: after step 2, then after step 6.
    for key, field in (("steps_eig_1", "eigenvalues"), ("steps_trace", "trace")):
        latest = [monitor.records[i][field] for i in (0, 2)]
        if field == "eigenvalues":
            latest = [values[0] for values in latest]
        assert fitted["history"][key] == latest


def test_history_and_csv_logger_hold_the_keys(fitted):
    history, rows = fitted["history"], fitted["csv"]
    keys = [key for monitor in fitted["monitors"].values() for key in monitor.keys]
    assert keys == [
        "exact_eig_1",
        "exact_eig_2",
        "exact_eig_min",
        "exact_trace",
        "steps_eig_1",
        "steps_trace",
    ]
    assert len(rows) == EPOCHS
    for key in keys:
        assert len(history[key]) == EPOCHS
        assert [float(row[key]) for row in rows] == history[key]


def dropout_batchnorm_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8)(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.Activation("relu")(hidden)
    hidden = keras.layers.Dropout(0.3)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def train(monitors):
    """Weights, optimizer state, losses and the next draws of every random stream."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((48, 6)).astype("float32")
    y = rng.integers(0, 3, 48)
    keras.utils.set_random_seed(7)
    model = dropout_batchnorm_model()
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=monitors(x, y))
    state = [*model.get_weights(), *(v.numpy() for v in model.optimizer.variables)]
    streams = (tf.random.uniform([3]).numpy(), np.random.random(3), random.random())  # noqa: NPY002 (the global stream itself)
    return state, history.history, streams


def test_training_is_bit_identical_with_and_without_the_monitor():
    state, history, streams = train(lambda x, y: [])
    with_state, with_history, with_streams = train(
        lambda x, y: [
            CurvatureMonitor(
                x[:20], y[:20], k=2, smallest=True, trace_matvecs=8, every=2, unit="step"
            )
        ]
    )
    assert len(state) == len(with_state)
    for a, b in zip(state, with_state, strict=True):
        assert a.tobytes() == b.tobytes()
    for key, values in history.items():
        assert values == with_history[key], key
    for a, b in zip(streams, with_streams, strict=True):
        assert np.array_equal(a, b)
    assert len(with_history["hessian_eig_1"]) == 3 and not math.isnan(
        with_history["hessian_eig_1"][0]
    )


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (dict(k=0), ValueError, "`k`"),
        (dict(k=1.5), TypeError, "`k`"),
        (dict(every=0), ValueError, "`every`"),
        (dict(unit="batch"), ValueError, "`unit`"),
        (dict(trace_matvecs=3), ValueError, "`trace_matvecs` must be at least 4"),
        (dict(max_hvps=20, trace_matvecs=20), ValueError, "`max_hvps` = 20 leaves 0"),
        (dict(max_hvps=9, smallest=True, k=2, trace=False), ValueError, "at least 10"),
        (dict(tol=-1.0), ValueError, "`tol`"),
        (dict(smallest="yes"), TypeError, "`smallest`"),
        (dict(batch_size=0), ValueError, "`batch_size`"),
        (dict(prefix=""), TypeError, "`prefix`"),
        (dict(x=None), ValueError, "`x`"),
    ],
)
def test_bad_arguments_raise_at_construction(arguments, error, message):
    arguments = {"x": np.zeros((4, 3)), "y": np.zeros((4, 2)), **arguments}
    with pytest.raises(error, match=message.replace("(", r"\(")):
        CurvatureMonitor(arguments.pop("x"), arguments.pop("y"), **arguments)


def test_data_that_do_not_fit_fail_before_the_first_step():
    model = float64_model()
    before = model.get_weights()
    x, y = data(1, 8)
    monitor = CurvatureMonitor(np.zeros((4, 5)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    with pytest.raises(ValueError, match="`k` must be smaller than the number of parameters, 26"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[CurvatureMonitor(x, y, k=26)])


def test_budget_bounds_the_products_and_skipped_or_unconverged_values_are_nan(monkeypatch):
    model = float64_model()
    x, y = data(3, 16)
    monitor = CurvatureMonitor(x, y, k=3, tol=0.0, trace=False, max_hvps=9, every=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
    (record,) = monitor.records
    assert record["epoch"] == 1 and record["hvps"] <= 9
    assert any("found" in str(w.message) and "max_hvps" in str(w.message) for w in caught)
    assert all(math.isnan(history.history[key][0]) for key in monitor.keys)
    found = [v for v in record["eigenvalues"] if not math.isnan(v)]
    assert len(found) < 3
    assert math.isnan(history.history["hessian_eig_3"][1])
    # Should ARPACK ask for more products than its bound allows, the solve
    # stops at the budget: here the bound is made to allow twice as many.
    monkeypatch.setattr(
        "tfhess_linop.keras._arpack_products", lambda k, ncv, maxiter: maxiter * ncv // 2
    )
    with pytest.warns(RuntimeWarning, match="found 0 of 3"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
    assert monitor.records[-1]["hvps"] == 9
    assert all(math.isnan(v) for v in monitor.records[-1]["eigenvalues"])
