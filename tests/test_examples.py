"""Every script in ``examples/`` runs, checks its own numbers and saves its figures.

The scripts assert their results against dense references themselves; here
each runs as a subprocess with ``CI=true`` (small sizes) and ``--out`` a
temporary folder, two at a time with one TensorFlow thread each, and must exit
with status 0 and write at least one PNG. ``mpi_spectrum.py`` runs under
``mpiexec -n 2``.
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))
MPI_SCRIPTS = {"mpi_spectrum.py"}
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
TIMEOUT = 300


def _command(name, out):
    command = [sys.executable, str(EXAMPLES / name), "--out", str(out)]
    if name in MPI_SCRIPTS:
        command = [MPIEXEC, "-n", "2", *command]
    return command


def _run(name, root):
    out = root / name.removesuffix(".py")
    environment = dict(
        os.environ,
        CI="true",
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        MPLBACKEND="Agg",
    )
    try:
        completed = subprocess.run(
            _command(name, out),
            capture_output=True,
            text=True,
            env=environment,
            timeout=TIMEOUT,
            cwd=root,
        )
    except subprocess.TimeoutExpired as exc:
        return out, None, f"timed out after {exc.timeout} s"
    return out, completed.returncode, completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every example, two at a time (the MPI one first: it takes two cores)."""
    root = tmp_path_factory.mktemp("examples")
    names = [n for n in SCRIPTS if n in MPI_SCRIPTS and MPIEXEC] + [
        n for n in SCRIPTS if n not in MPI_SCRIPTS
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, name, root) for name in names}
    return {name: future.result() for name, future in futures.items()}


def test_the_examples_are_all_here():
    expected = {
        "cubic_taylor.py",
        "xor_hessian.py",
        "randomized_svd.py",
        "solvers_negative_curvature.py",
        "newton_training.py",
        "mpi_spectrum.py",
    }
    assert expected <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_and_saves_figures(runs, name):
    if name in MPI_SCRIPTS and MPIEXEC is None:
        pytest.skip("mpiexec not found")
    out, status, output = runs[name]
    assert status == 0, f"{name} failed ({status}):\n{output[-4000:]}"
    figures = list(out.glob("*.png"))
    assert figures, f"{name} wrote no PNG to {out}"
    assert all(figure.stat().st_size > 10_000 for figure in figures)
    assert "Traceback" not in output
