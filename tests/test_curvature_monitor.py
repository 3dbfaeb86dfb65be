"""`tfhess_linop.keras.CurvatureMonitor` logs the Hessian Keras trains, and changes nothing.

The reference at each epoch (or step) is a dense Hessian by nested
``tf.GradientTape``s (``tape.jacobian`` of the gradient) of Keras' own
``model.compute_loss`` on the monitor's data as one batch, taken by a second
callback that runs right after the monitor, at the same weights; its
eigenvalues come from `numpy.linalg.eigvalsh`, its trace from `numpy.trace`.
One small float64 fit (BatchNorm, Dropout, two outputs), shared by the
module, carries the monitors; the same fit without them is the reference
for "training is unchanged".
"""

import csv
import math
import random
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhess_linop as thl
from tfhess_linop.keras import CurvatureMonitor

F64 = "float64"
N_TRAIN, N_MONITOR, EPOCHS, BATCH = 40, 24, 2, 16  # 3 steps per epoch
N_PARAMETERS = 39


def float64_model(seed=0):
    """Dense, BatchNorm, Dropout and two heads in float64 (39 weights), float64 losses."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,), dtype=F64)
    hidden = keras.layers.Dense(4, dtype=F64)(inputs)
    hidden = keras.layers.BatchNormalization(dtype=F64)(hidden)
    hidden = keras.layers.Activation("tanh", dtype=F64)(hidden)
    hidden = keras.layers.Dropout(0.25, dtype=F64)(hidden)
    outputs = [
        keras.layers.Dense(2, dtype=F64, name="a")(hidden),
        keras.layers.Dense(1, dtype=F64, name="b")(hidden),
    ]
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=[keras.losses.MeanSquaredError(dtype=F64), keras.losses.MeanAbsoluteError(dtype=F64)],
        loss_weights=[1.0, 0.5],
    )
    return model


def dense_objective_hessian(model, x, y):
    """The Hessian of ``model.compute_loss`` on (x, y) as one batch, by nested tapes.

    ``compute_loss`` updates the per-output loss metrics; they are put back,
    so that this reference leaves the fit's logs alone.
    """
    saved = [v.numpy() for v in model.metrics_variables]
    variables = model.trainable_variables
    x, y = tf.constant(x), [tf.constant(t) for t in y]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False), training=False)
        gradient = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    rows = outer.jacobian(gradient, variables, experimental_use_pfor=False)
    for variable, value in zip(model.metrics_variables, saved, strict=True):
        variable.assign(value)
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
    """Inputs (n, 3) and the two heads' targets, (n, 2) and (n, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = np.stack([np.sin(x[:, 0]) + x[:, 1] * x[:, 2], x[:, 0] - 0.5 * x[:, 2]], axis=1)
    return x, (y, np.cos(x[:, 1:2]))


def train(callbacks):
    """A shuffled fit: its logs, and the state and random streams it leaves."""
    x, y = data(1, N_TRAIN)
    model = float64_model()
    history = model.fit(
        x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=True, verbose=0, callbacks=callbacks
    )
    state = [*model.get_weights(), *(v.numpy() for v in model.optimizer.variables)]
    streams = (tf.random.uniform([3]).numpy(), np.random.random(3), random.random())  # noqa: NPY002 (the global streams themselves)
    return history.history, state, streams


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit carrying two monitors, a dense reference and a CSVLogger."""
    xm, ym = data(2, N_MONITOR)
    monitors = {
        # exact trace (as many products as parameters), both ends, every epoch
        "exact": CurvatureMonitor(
            xm, ym, k=2, smallest=True, trace_matvecs=N_PARAMETERS, prefix="exact"
        ),
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
    history, state, streams = train(
        [*monitors.values(), reference, keras.callbacks.CSVLogger(str(path))]
    )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert reference.step == 3 * EPOCHS
    return dict(
        history=history,
        state=state,
        streams=streams,
        csv=rows,
        monitors=monitors,
        after_step=reference.after_step,
        at_epoch_end=[reference.after_step[3], reference.after_step[6]],
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
        # Hutch++ with the monitor's seed: the same probes as on the dense matrix
        # (the exact trace is checked with as many products as parameters).
        same_probes = thl.hutchpp_trace(H, 12, rng=0)
        assert np.isclose(record["trace"], same_probes.estimate, rtol=1e-9)
        assert np.isclose(record["trace_standard_error"], same_probes.standard_error, rtol=1e-6)
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


def test_training_is_bit_identical_with_and_without_the_monitors(fitted):
    """Weights, optimizer state, BatchNorm statistics, losses and random streams."""
    history, state, streams = train([])
    assert len(state) == len(fitted["state"])
    for a, b in zip(state, fitted["state"], strict=True):
        assert a.tobytes() == b.tobytes()
    assert {"loss", "a_loss", "b_loss"} <= set(history)
    for key, values in history.items():
        assert values == fitted["history"][key], key
    for a, b in zip(streams, fitted["streams"], strict=True):
        assert np.array_equal(a, b)


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
    too_many = CurvatureMonitor(x, y, k=N_PARAMETERS)
    with pytest.raises(ValueError, match=f"smaller than the number of parameters, {N_PARAMETERS}"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[too_many])


def test_budget_bounds_the_products_and_skipped_or_unconverged_values_are_nan(monkeypatch, capsys):
    model = float64_model()
    x, y = data(3, 16)
    monitor = CurvatureMonitor(x, y, k=3, tol=0.0, trace=False, max_hvps=9, every=2, verbose=True)
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
    # verbose: a progress bar counted in products, towards the budget
    assert re.search(r"Hessian at epoch 2: +\d+%.*/9 ", capsys.readouterr().err)
    # Should ARPACK ask for more products than its bound allows, the solve
    # stops at the budget: here the bound is made to allow twice as many.
    monkeypatch.setattr(
        "tfhess_linop.keras._arpack_products", lambda k, ncv, maxiter: maxiter * ncv // 2
    )
    with pytest.warns(RuntimeWarning, match="found 0 of 3"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
    assert monitor.records[-1]["hvps"] == 9
    assert all(math.isnan(v) for v in monitor.records[-1]["eigenvalues"])
