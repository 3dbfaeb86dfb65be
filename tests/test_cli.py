"""The ``tfhess-linop`` command: demo, spectrum, bad input, MPI.

References are independent of the package: the Hessian of a saved model's
mean loss by nested TensorFlow tapes, and its spectrum by NumPy.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfhess_linop.cli import main

VENV_BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(VENV_BIN)) or shutil.which("mpiexec")


def _environment():
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="true")
    environment.pop("PMI_SIZE", None)
    return environment


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
    eigenvalues = np.linalg.eigvalsh(_reference_hessian(model, x, y))
    return folder, eigenvalues


def test_spectrum_matches_numpy_eigenvalues(saved, tmp_path, capsys):
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
    printed = capsys.readouterr().out
    assert "largest eigenvalues" in printed and "Hessian-vector products" in printed
    result = json.loads((tmp_path / "spectrum.json").read_text())
    assert result["n_parameters"] == 43 and result["n_samples"] == 60
    assert result["loss"] == "mse"
    largest = result["eigenvalues"]["largest"]
    smallest = result["eigenvalues"]["smallest"]
    np.testing.assert_allclose(largest["values"], eigenvalues[::-1][:3], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(smallest["values"], eigenvalues[:3], rtol=1e-6, atol=1e-9)
    assert largest["hvp"] > 0 and smallest["hvp"] > 0
    assert (tmp_path / "spectrum.png").stat().st_size > 0


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
    assert (tmp_path / "density.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.keras", "data.npz"], "no such file"),
        (["model.keras", "missing.npz"], "no such file"),
        (["model.keras", "renamed.npz"], "expected arrays named 'x' and 'y'"),
        (["model.keras", "narrow.npz"], "does not fit the model"),
        (["model.keras", "uneven.npz"], "same number of samples"),
        (["model.keras", "data.npz", "--loss", "no_such_loss"], "unknown loss"),
        (["model.keras", "data.npz", "-k", "0"], "-k must be a positive integer"),
        (["model.keras", "data.npz", "-k", "43"], "-k must be smaller"),
        (["model.keras", "data.npz", "--trace", "--trace-matvecs", "2"], "at least 4"),
        (["uncompiled.keras", "data.npz"], "--loss"),
        (["data.npz", "data.npz"], "cannot load a Keras model"),
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


def test_demo_runs_in_under_a_minute_and_checks_out(tmp_path):
    """The console script's demo; `python -m tfhess_linop` runs in the MPI test."""
    script = VENV_BIN / "tfhess-linop"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tfhess_linop"]
    completed = subprocess.run(
        [*command, "demo", "--out", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
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
        env=_environment(),
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
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


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("tfhess-linop ")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
