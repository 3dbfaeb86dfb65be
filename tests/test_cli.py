"""The ``tfhess-linop`` command: demo, spectrum, bad input, MPI, a quiet fast start.

References are independent of the package: the Hessian of a saved model's
objective (``model.compute_loss``) by nested TensorFlow tapes, and its
spectrum by NumPy. Runs of the command in a subprocess are slow (TensorFlow's
start-up); each is made once, in a module fixture, and shared.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfhess_linop._cli_logs import NativeLogFilter
from tfhess_linop.cli import _parser, main

VENV_BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(VENV_BIN)) or shutil.which("mpiexec")
SCRIPT = VENV_BIN / "tfhess-linop"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tfhess_linop"]
# A line of TensorFlow's C++ log (absl/glog prefix) or absl's start-up notice.
NATIVE_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ |WARNING: All log messages before absl)")


def _environment(tf_log_level="2"):
    """The command's environment; `tf_log_level` None leaves TensorFlow at its chattiest."""
    environment = dict(os.environ, CI="true")
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if tf_log_level is not None:
        environment["TF_CPP_MIN_LOG_LEVEL"] = tf_log_level
    environment.pop("PMI_SIZE", None)
    return environment


def _native_lines(text):
    return [line for line in text.splitlines() if NATIVE_LOG.match(line)]


def _reference_hessian(model, x, y):
    """The Hessian of the mean squared error by nested tapes, in float64."""
    weights = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        gradient = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, weights)], 0)
    blocks = outer.jacobian(gradient, weights)
    n = int(gradient.shape[0])
    dense = np.hstack([b.numpy().reshape(n, -1) for b in blocks])
    return 0.5 * (dense + dense.T)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A float64 5-6-1 tanh MLP saved with its loss, its data, and reference spectrum."""
    folder = tmp_path_factory.mktemp("spectrum")
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 5))
    y = np.tanh(x[:, :1] - x[:, 1:2]) + 0.1 * rng.standard_normal((60, 1))

    def mlp():
        return keras.Sequential(
            [
                keras.Input((5,), dtype="float64"),
                keras.layers.Dense(6, activation="tanh", dtype="float64"),
                keras.layers.Dense(1, dtype="float64"),
            ]
        )

    model = mlp()
    model.compile(loss="mse")
    model.save(folder / "model.keras")
    uncompiled = mlp()
    uncompiled.set_weights(model.get_weights())
    uncompiled.save(folder / "uncompiled.keras")
    np.savez(folder / "data.npz", x=x, y=y)
    np.savez(folder / "renamed.npz", inputs=x, targets=y)
    np.savez(folder / "narrow.npz", x=x[:, :3], y=y)
    np.savez(folder / "uneven.npz", x=x, y=y[:50])
    np.savez(folder / "extra.npz", x=x, y=y, weights=np.ones(60))
    np.savez(folder / "short_weights.npz", x=x, y=y, sample_weight=np.ones(59))
    (folder / "text.keras").write_text("not a model")
    # A 3-class classifier; one label out of range, past the first samples.
    classifier = keras.Sequential(
        [keras.Input((5,), dtype="float64"), keras.layers.Dense(3, dtype="float64")]
    )
    classifier.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.save(folder / "classifier.keras")
    labels = (x[:, 0] > 0).astype(np.int64)
    labels[41] = 3
    np.savez(folder / "bad_labels.npz", x=x, y=labels)
    eigenvalues = np.linalg.eigvalsh(_reference_hessian(model, x, y))
    return folder, eigenvalues


@pytest.fixture(scope="module")
def regularized(tmp_path_factory):
    """A model compiled with log-cosh and an L2 kernel regularizer, data with weights.

    Returns the folder and the reference model: the saved one loaded with
    float64 losses, so that its ``compute_loss`` is the float64 objective.
    """
    folder = tmp_path_factory.mktemp("objective")
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((48, 4))
    y = np.sin(x[:, :1]) + 0.3 * x[:, 1:2]
    weights = rng.uniform(0.0, 2.0, 48)
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(
                5,
                activation="tanh",
                dtype="float64",
                kernel_regularizer=keras.regularizers.L2(1e-2),
            ),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    model.compile(loss="log_cosh")
    model.save(folder / "model.keras")
    np.savez(folder / "data.npz", x=x, y=y)
    np.savez(folder / "weighted.npz", x=x, y=y, sample_weight=weights)
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        with warnings.catch_warnings():
            # The saved optimizer has no state yet; only the loss matters.
            warnings.simplefilter("ignore", UserWarning)
            reference = keras.models.load_model(folder / "model.keras")
    finally:
        keras.config.set_floatx(floatx)
    return folder, reference, x, y, weights


def _objective_hessian(model, x, y, sample_weight):
    """Value and dense Hessian of ``model.compute_loss`` by nested tapes."""
    weights = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            value = model.compute_loss(x=x, y=y, y_pred=model(x), sample_weight=sample_weight)
        gradient = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(value, weights)], 0)
    n = int(gradient.shape[0])
    dense = np.hstack([b.numpy().reshape(n, -1) for b in outer.jacobian(gradient, weights)])
    return float(value), 0.5 * (dense + dense.T)


def test_spectrum_matches_numpy_eigenvalues(saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tfhess_linop._progress.DELAY", 0.0)
    folder, eigenvalues = saved
    status = main(
        [
            "spectrum",
            str(folder / "model.keras"),
            str(folder / "data.npz"),
            "-k",
            "3",
            "--batch-size",
            "16",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert status == 0
    printed, printed_err = capsys.readouterr()
    assert "largest eigenvalues" in printed and "Hessian-vector products" in printed
    result = json.loads((tmp_path / "spectrum.json").read_text())
    assert result["n_parameters"] == 43 and result["n_samples"] == 60
    assert result["loss"] == "mse"
    largest = result["eigenvalues"]["largest"]
    smallest = result["eigenvalues"]["smallest"]
    np.testing.assert_allclose(largest["values"], eigenvalues[::-1][:3], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(smallest["values"], eigenvalues[:3], rtol=1e-6, atol=1e-9)
    assert largest["hvp"] > 0 and smallest["hvp"] > 0
    # No --plot, no figure; no --progress, no bar.
    assert result["files"] == ["spectrum.json"]
    assert not (tmp_path / "spectrum.png").exists()
    assert "hvp" not in printed_err


def test_spectrum_plot_and_progress(saved, tmp_path, capsys, monkeypatch):
    """--plot draws the density and the eigenvalues into spectrum.png; --progress shows bars."""
    monkeypatch.setattr("tfhess_linop._progress.DELAY", 0.0)
    folder, _ = saved
    arguments = [str(folder / "model.keras"), str(folder / "data.npz"), "-k", "2"]
    options = ["--density", "--probes", "4", "--steps", "20", "--trace", "--trace-matvecs", "12"]
    status = main(
        ["spectrum", *arguments, *options, "--plot", "--progress", "--out", str(tmp_path)]
    )
    assert status == 0
    captured = capsys.readouterr()
    for bar in ("Lanczos (largest)", "Lanczos (smallest)", "Hutch++ trace", "SLQ density"):
        assert bar in captured.err and "hvp" in captured.err
    # Where the number of products is known, the bar counts towards it.
    assert re.search(r"Hutch\+\+ trace: +\d+%.*/12 ", captured.err)
    assert re.search(r"SLQ density: +\d+%.*/80 ", captured.err)
    result = json.loads((tmp_path / "spectrum.json").read_text())
    assert result["files"] == ["spectrum.json", "spectrum.png"]
    assert "wrote spectrum.json, spectrum.png to" in captured.out
    from matplotlib.image import imread

    figure = imread(tmp_path / "spectrum.png")
    # Two panels, the density above the eigenvalue bars (one panel: ~400 pixels high).
    assert figure.shape[0] > 700 and figure.shape[1] == 900


def test_spectrum_density_and_trace(saved, tmp_path):
    folder, eigenvalues = saved
    status = main(
        [
            "spectrum",
            str(folder / "model.keras"),
            str(folder / "data.npz"),
            "--loss",
            "mse",
            "--which",
            "largest",
            "-k",
            "1",
            "--density",
            "--probes",
            "4",
            "--steps",
            "20",
            "--trace",
            "--trace-matvecs",
            "60",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert status == 0
    result = json.loads((tmp_path / "spectrum.json").read_text())
    assert list(result["eigenvalues"]) == ["largest"]
    # 60 products >= n = 43: Hutch++ computes the trace exactly.
    np.testing.assert_allclose(result["trace"]["estimate"], eigenvalues.sum(), rtol=1e-8)
    density = result["density"]
    assert density["probes"] == 4
    assert eigenvalues[0] - 1e-6 <= density["ritz_min"] <= density["ritz_max"]
    assert density["ritz_max"] <= eigenvalues[-1] + 1e-6
    np.testing.assert_allclose(density["ritz_max"], eigenvalues[-1], rtol=1e-6)
    assert np.trapezoid(density["density"], density["grid"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("weighted", [False, True], ids=["compiled loss", "sample_weight"])
def test_spectrum_is_the_compiled_objective(regularized, tmp_path, weighted):
    """No --loss: the saved model's compiled loss plus its regularizer, weighted as fit does."""
    folder, reference, x, y, weights = regularized
    sample_weight = weights if weighted else None
    data = folder / ("weighted.npz" if weighted else "data.npz")
    options = ["-k", "2", "--which", "largest", "--out", str(tmp_path), "--quiet"]
    status = main(["spectrum", str(folder / "model.keras"), str(data), *options])
    assert status == 0
    result = json.loads((tmp_path / "spectrum.json").read_text())
    value, dense = _objective_hessian(reference, x, y, sample_weight)
    assert result["loss"] == "log_cosh" and result["sample_weight"] is weighted
    np.testing.assert_allclose(result["loss_value"], value, rtol=1e-6)
    np.testing.assert_allclose(
        result["eigenvalues"]["largest"]["values"], np.linalg.eigvalsh(dense)[::-1][:2], rtol=1e-5
    )


def test_spectrum_loss_option_replaces_the_compiled_loss(regularized, tmp_path):
    folder, reference, x, y, _ = regularized
    options = ["--loss", "mse", "-k", "1", "--which", "largest", "--out", str(tmp_path)]
    status = main(["spectrum", str(folder / "model.keras"), str(folder / "data.npz"), *options])
    assert status == 0
    result = json.loads((tmp_path / "spectrum.json").read_text())
    # The data term is the mean squared error; the L2 regularizer still counts.
    residual = reference(x).numpy() - y
    penalty = 1e-2 * np.sum(reference.layers[0].kernel.numpy() ** 2)
    assert result["loss"] == "mse"
    np.testing.assert_allclose(result["loss_value"], np.mean(residual**2) + penalty, rtol=1e-6)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.keras", "data.npz"], "no such file"),
        (["model.keras", "missing.npz"], "no such file"),
        (["model.keras", "renamed.npz"], "expected arrays named 'x' and 'y'"),
        (["model.keras", "extra.npz"], "unexpected arrays ['weights']"),
        (["model.keras", "narrow.npz"], "incompatible"),
        (["model.keras", "uneven.npz"], "same number of samples"),
        (["model.keras", "short_weights.npz"], "same number of samples"),
        (["model.keras", "data.npz", "--loss", "no_such_loss"], "--loss 'no_such_loss' is not"),
        (["model.keras", "data.npz", "-k", "0"], "-k must be a positive integer"),
        (["model.keras", "data.npz", "-k", "43"], "-k must be smaller"),
        (["model.keras", "data.npz", "--trace", "--trace-matvecs", "2"], "at least 4"),
        (["uncompiled.keras", "data.npz"], "--loss"),
        (["data.npz", "data.npz"], "cannot load a Keras model"),
        (["text.keras", "data.npz"], "cannot load a Keras model"),
        (["classifier.keras", "bad_labels.npz"], "label value of 3 which is outside"),
    ],
)
def test_bad_input_is_one_line_and_status_2(saved, tmp_path, capsys, arguments, message):
    folder, _ = saved
    paths = [str(folder / a) if a.endswith((".keras", ".npz")) else a for a in arguments]
    status = main(["spectrum", *paths, "--out", str(tmp_path), "--quiet"])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfhess-linop: error: ")
    assert message in lines[0]
    assert not (tmp_path / "spectrum.json").exists()


def test_debug_shows_the_traceback_then_the_line(saved, tmp_path, capsys):
    folder, _ = saved
    arguments = [str(folder / "classifier.keras"), str(folder / "bad_labels.npz")]
    status = main(["spectrum", *arguments, "--out", str(tmp_path), "--quiet", "--debug"])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback (most recent call last)" in err and "InvalidArgumentError" in err
    assert err.strip().splitlines()[-1].startswith("tfhess-linop: error: ")


def test_an_unexpected_failure_is_one_line_and_status_1(saved, tmp_path, capsys, monkeypatch):
    import tfhess_linop.eigen

    def broken(*args, **kwargs):
        raise RuntimeError("Lanczos broke\nsecond line")

    monkeypatch.setattr(tfhess_linop.eigen, "eigsh", broken)
    folder, _ = saved
    arguments = [str(folder / "model.keras"), str(folder / "data.npz")]
    status = main(["spectrum", *arguments, "-k", "1", "--out", str(tmp_path), "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert lines == ["tfhess-linop: error: RuntimeError: Lanczos broke second line"]


def _not_a_folder(tmp_path):
    (tmp_path / "file").write_text("")
    return str(tmp_path / "file" / "sub"), "cannot write there"


def _a_file(tmp_path):
    (tmp_path / "file").write_text("")
    return str(tmp_path / "file"), "is not a folder"


def _read_only(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "sub"), "cannot write there"


@pytest.mark.parametrize(
    "case",
    [
        _not_a_folder,
        _a_file,
        lambda tmp_path: ("/proc/tfhess-linop", "cannot write there"),
        pytest.param(
            _read_only,
            marks=pytest.mark.skipif(
                hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere"
            ),
        ),
    ],
    ids=["under a file", "a file", "/proc", "read-only"],
)
@pytest.mark.parametrize("command", ["spectrum", "demo"])
def test_unusable_out_fails_before_any_work(saved, tmp_path, capsys, monkeypatch, case, command):
    import tfhess_linop.cli

    def no_work(*args, **kwargs):
        raise AssertionError("the command started working")

    monkeypatch.setattr(tfhess_linop.cli, "load_model", no_work)
    monkeypatch.setattr("tfhess_linop.demo.run_demo", no_work)
    folder, _ = saved
    out, message = case(tmp_path)
    arguments = [str(folder / "model.keras"), str(folder / "data.npz")]
    if command == "demo":
        arguments = []
    status = main([command, *arguments, "--out", out, "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"tfhess-linop: error: --out {out}: ")
    assert message in lines[0]


def test_plot_without_matplotlib_fails_before_any_work(saved, tmp_path, capsys, monkeypatch):
    import importlib.util

    import tfhess_linop.cli

    def no_work(*args, **kwargs):
        raise AssertionError("the command started working")

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    monkeypatch.setattr(tfhess_linop.cli, "load_model", no_work)
    folder, _ = saved
    status = main(
        [
            "spectrum",
            str(folder / "model.keras"),
            str(folder / "data.npz"),
            "--plot",
            "--out",
            str(tmp_path),
        ]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1
    assert lines[0] == "tfhess-linop: error: --plot needs matplotlib, " + (
        "which is not installed (pip install matplotlib)."
    )


def test_demo_runs_in_under_a_minute_and_checks_out(tmp_path):
    """The console script's demo; `python -m tfhess_linop` runs in the MPI test.

    TensorFlow logs at its default level: its C++ lines must not reach the
    user, whose standard error stays empty.
    """
    completed = subprocess.run(
        [*COMMAND, "demo", "--out", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
        env=_environment(tf_log_level=None),
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert _native_lines(completed.stderr) == []
    assert completed.stderr == ""
    printed = completed.stdout
    for header in (
        "1. Cubic loss",
        "2. XOR network",
        "3. Randomized SVD",
        "4. Newton system",
        "5. Training",
        "6. Spectral density",
    ):
        assert header in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seconds"] < 60
    cubic = summary["cubic"]
    assert abs(cubic["taylor_order"] - 3) < 0.1
    np.testing.assert_allclose(cubic["eigenvalues"], [30.0, -6.0], rtol=1e-8)
    assert cubic["dense_error"] < 1e-12
    xor = summary["xor"]
    assert xor["n"] == 9 and xor["lanczos_error"] < 1e-10
    assert min(xor["eigenvalues"]) < 0 < max(xor["eigenvalues"])
    svd = summary["randomized_svd"]
    errors = [
        max(entry["relative_errors"]) for name, entry in svd.items() if isinstance(entry, dict)
    ]
    assert errors[2] <= errors[1] <= errors[0]  # Krylov <= subspace <= range finder
    solvers = summary["solvers"]
    certificate = solvers["CG"]["negative_curvature"]
    assert certificate["curvature"] < 0
    assert certificate["curvature"] == pytest.approx(
        certificate["dense_rayleigh_quotient"], rel=1e-8
    )
    assert certificate["curvature"] >= solvers["lambda_min"] - 1e-12
    training = summary["training"]
    assert training["newton"]["correct"] == 4
    assert training["newton"]["losses"][-1] < 1e-8
    density = summary["density"]
    assert density["extremes_error"] < 1e-5 * max(abs(density["eigenvalue_max"]), 1.0)
    assert abs(density["trace"] - density["exact_trace"]) < 4 * density["trace_standard_error"]
    for name in summary["figures"]:
        assert (tmp_path / name).stat().st_size > 10_000


@pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")
def test_spectrum_under_mpiexec_matches_serial(saved, tmp_path):
    folder, eigenvalues = saved
    completed = subprocess.run(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            "-m",
            "tfhess_linop",
            "spectrum",
            str(folder / "model.keras"),
            str(folder / "data.npz"),
            "-k",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=_environment(tf_log_level=None),
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    # TensorFlow starts after the command filters its log lines, on every rank.
    assert _native_lines(completed.stderr) == []
    # Only rank 0 prints.
    assert completed.stdout.count("largest eigenvalues") == 1
    result = json.loads((tmp_path / "spectrum.json").read_text())
    assert result["ranks"] == 2
    np.testing.assert_allclose(
        result["eigenvalues"]["largest"]["values"], eigenvalues[::-1][:2], rtol=1e-6
    )
    np.testing.assert_allclose(
        result["eigenvalues"]["smallest"]["values"], eigenvalues[:2], rtol=1e-6, atol=1e-9
    )


# ------------------------------------------------------ a quiet, fast start

_WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from tfhess_linop.cli import main

    def run(argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exc:
                status = exc.code
        return {"status": status, "out": out.getvalue(), "err": err.getvalue()}

    runs = [run(argv) for argv in json.loads(sys.argv[1])]
    print(json.dumps({"runs": runs, "imported": sorted(
        name for name in ("tensorflow", "keras", "matplotlib") if name in sys.modules)}))
    """
)


@pytest.fixture(scope="module")
def without_tensorflow(saved, tmp_path_factory):
    """--help, --version, argument, file and --out errors, in one fresh interpreter."""
    folder, _ = saved
    scratch = tmp_path_factory.mktemp("startup")
    (scratch / "file").write_text("")
    model, data = str(folder / "model.keras"), str(folder / "data.npz")
    cases = {
        "help": ["--help"],
        "spectrum help": ["spectrum", "--help"],
        "version": ["--version"],
        "no command": [],
        "bad option": ["spectrum", model, data, "--which", "middle"],
        "missing model": ["spectrum", str(folder / "missing.keras"), data],
        "not a model": ["spectrum", str(folder / "text.keras"), data],
        "npz as model": ["spectrum", data, data],
        "missing data": ["spectrum", model, str(folder / "missing.npz")],
        "renamed arrays": ["spectrum", model, str(folder / "renamed.npz")],
        "uneven": ["spectrum", model, str(folder / "uneven.npz")],
        "k": ["spectrum", model, data, "-k", "0"],
        "out under a file": ["spectrum", model, data, "--out", str(scratch / "file" / "x")],
        "demo out": ["demo", "--out", "/proc/tfhess-linop"],
    }
    completed = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, json.dumps(list(cases.values()))],
        capture_output=True,
        text=True,
        env=_environment(tf_log_level=None),
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    answer = json.loads(completed.stdout)
    return dict(zip(cases, answer["runs"], strict=True)), answer["imported"], completed.stderr


def test_help_version_and_bad_input_do_not_import_tensorflow(without_tensorflow):
    runs, imported, stderr = without_tensorflow
    assert imported == []
    assert stderr == ""
    assert runs["help"]["status"] == 0 and "spectrum" in runs["help"]["out"]
    assert "--verbose" in runs["spectrum help"]["out"]
    assert runs["version"]["status"] == 0 and runs["version"]["out"].startswith("tfhess-linop ")
    for name in ("no command", "bad option"):
        assert runs[name]["status"] == 2
        assert runs[name]["err"].strip().splitlines()[-1].startswith("tfhess-linop: error: ")
    for name, run in runs.items():
        if name in ("help", "spectrum help", "version", "no command", "bad option"):
            continue
        lines = run["err"].strip().splitlines()
        assert run["status"] == 2, (name, run)
        assert len(lines) == 1 and lines[0].startswith("tfhess-linop: error: "), (name, run)
    assert "cannot load a Keras model" in runs["npz as model"]["err"]
    assert "--out" in runs["out under a file"]["err"] and "--out" in runs["demo out"]["err"]


def test_lazy_namespace_resolves_every_public_name():
    """The package imports its names on first use (so that --help is fast)."""
    import importlib

    import tfhess_linop

    for name in tfhess_linop.__all__:
        module = importlib.import_module(f"tfhess_linop.{tfhess_linop._EXPORTS[name]}")
        assert getattr(tfhess_linop, name) is getattr(module, name)
    assert set(tfhess_linop.__all__) <= set(dir(tfhess_linop))
    with pytest.raises(AttributeError, match="no_such_name"):
        tfhess_linop.no_such_name  # noqa: B018


def test_under_a_launcher_threads_are_set_when_tensorflow_is_imported():
    """Under mpiexec the package sets one thread per rank, without importing TensorFlow."""
    code = textwrap.dedent(
        """
        import sys
        import tfhess_linop
        assert "tensorflow" not in sys.modules
        import tensorflow as tf
        threading = tf.config.threading
        print(threading.get_intra_op_parallelism_threads(),
              threading.get_inter_op_parallelism_threads())
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(_environment(), PMI_SIZE="2"),
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["1", "1"]


def test_help_imports_no_tensorflow_module():
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tfhess_linop", "--help"],
        capture_output=True,
        text=True,
        env=_environment(tf_log_level=None),
        timeout=60,
    )
    assert completed.returncode == 0
    modules = [line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines()]
    assert "tfhess_linop.cli" in modules
    assert not [m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "scipy")]


@pytest.fixture(scope="module")
def spectrum_failure(saved):
    """The console script on labels out of range, TensorFlow at its default log level."""
    folder, _ = saved
    arguments = [str(folder / "classifier.keras"), str(folder / "bad_labels.npz")]
    return subprocess.run(
        [*COMMAND, "spectrum", *arguments, "--out", str(folder / "unused"), "--quiet"],
        capture_output=True,
        text=True,
        env=_environment(tf_log_level=None),
        timeout=180,
    )


def test_spectrum_failure_is_one_line_without_tensorflow_logs(spectrum_failure):
    assert spectrum_failure.returncode == 2
    lines = spectrum_failure.stderr.splitlines()
    assert len(lines) == 1, spectrum_failure.stderr[-3000:]
    assert lines[0].startswith("tfhess-linop: error: ")
    assert "label value of 3 which is outside the valid range of [0, 3)" in lines[0]


def test_native_log_filter_drops_only_tensorflow_lines(capfd):
    native = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to "
        b"STDERR\n"
        b"I0000 00:00:1796156934.957945   22894 cpu_feature_guard.cc:227] This TensorFlow "
        b"binary is optimized.\nTo enable the following instructions: AVX2 FMA, in other "
        b"operations, rebuild TensorFlow with the appropriate compiler flags.\n"
        b"W0000 00:00:1796157417.807212   26933 util.cc:61] Not handling type DT_DOUBLE\n"
        b"E0000 00:00:1796157411.387559   26710 cuda_platform.cc:52] failed call to cuInit\n"
        b"W0000 00:00:1796157417.807212   26933 local_rendezvous.cc:412] Local rendezvous is "
        b"aborting\n\t [[{{node compile_loss/SparseSoftmaxCrossEntropyWithLogits}}]]\n"
    )
    kept = b"a line of the user's\nFatal: kept\n\rprogress 1/2\rprogress 2/2\nWait"
    with NativeLogFilter():
        os.write(2, native[:70])
        os.write(2, native[70:] + kept)
    assert capfd.readouterr().err == kept.decode()
    with NativeLogFilter(enabled=False):
        os.write(2, native)
    assert capfd.readouterr().err == native.decode()


def test_verbose_and_debug_go_before_or_after_the_command():
    parser = _parser()
    for argv in (["--verbose", "demo"], ["demo", "--verbose"]):
        args = parser.parse_args(argv)
        assert args.verbose and not args.debug
    args = parser.parse_args(["--debug", "spectrum", "m.keras", "d.npz"])
    assert args.debug and not args.verbose
    args = parser.parse_args(["spectrum", "m.keras", "d.npz", "--debug", "--verbose"])
    assert args.debug and args.verbose


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("tfhess-linop ")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
