"""The distributed operator under ``mpiexec -n 2`` and ``-n 3`` (uneven shards)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")

SCRIPTS = Path(__file__).parent / "mpi"
MPIEXEC = Path(sys.prefix) / "bin" / "mpiexec"


def launch(script, ranks, *args, timeout):
    """Run `script` on `ranks` ranks: (return code, output), or None if it hung (killed)."""
    if not MPIEXEC.exists():
        pytest.fail(f"no mpiexec in the environment ({MPIEXEC}); install the 'mpi' extra")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, str(SCRIPTS / script), *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        return None, log
    return process.returncode, log


def run_under_mpi(script, ranks, output, timeout=240):
    """Run `script` on `ranks` ranks, killing the whole job if it hangs."""
    returncode, log = launch(script, ranks, str(output), timeout=timeout)
    if returncode is None:
        pytest.fail(f"{script} on {ranks} ranks did not finish in {timeout} s:\n{log[-4000:]}")
    assert returncode == 0, f"{script} on {ranks} ranks failed:\n{log[-6000:]}"
    return json.loads(Path(output).read_text())


@pytest.mark.parametrize("ranks", [2, 3])
def test_distributed_operator_equals_serial_on_every_rank(ranks, tmp_path):
    report = run_under_mpi("check_operator.py", ranks, tmp_path / "report.json")
    assert report["size"] == ranks
    checks = report["checks"]
    for expected in (
        "shard=True: matmat",
        "shard=False: dense",
        "shard=True: dense identical on all ranks",
        "custom loss: dense",
        "eigsh identical on all ranks",
        "lobpcg identical on all ranks",
        "power_iteration identical on all ranks",
        "fixed point: matmat identical on all ranks",
        "fixed point: matmat into out identical on all ranks",
        "fixed point: moved",
        "fixed point over budget: active identical on all ranks",
        "randomized_svd identical on all ranks",
        "cg identical on all ranks",
        "pcg identical on all ranks",
        "hutchpp_trace identical on all ranks",
        "xtrace",
        "xtrace identical on all ranks",
        "xdiag identical on all ranks",
        "hutchinson_diagonal identical on all ranks",
        "hutchinson_trace identical on all ranks",
        "spectral_density identical on all ranks",
    ):
        assert expected in checks


@pytest.mark.parametrize("ranks", [2, 3])
def test_failure_on_one_rank_raises_on_every_rank(ranks, tmp_path):
    per_rank = run_under_mpi("check_failures.py", ranks, tmp_path / "failures.json", timeout=180)
    healthy, faulty = per_rank[0], per_rank[-1]
    assert faulty["loss raises"].startswith("RuntimeError")
    assert "this rank's loss failed" in faulty["loss raises"]
    assert healthy["loss raises"].startswith("CollectiveError")
    assert f"rank {ranks - 1}: RuntimeError" in healthy["loss raises"]
    assert faulty["nan vector on one rank"].startswith("ValueError: `v` has non-finite")
    assert healthy["nan vector on one rank"].startswith("CollectiveError")
    assert not faulty["shape error in one shard"].startswith(("no error", "CollectiveError"))
    assert healthy["shape error in one shard"].startswith("CollectiveError")
    for outcomes in per_rank:
        assert outcomes["parameter counts differ"].startswith("ValueError: the ranks disagree")
        assert outcomes["healthy afterwards"] == "no error"


def test_a_rank_that_cannot_finish_an_exchange_aborts_the_job():
    # Issue 13: where one rank cannot take part any more, the communicator is
    # aborted (MPI_Abort) rather than left waiting.
    returncode, log = launch("check_abort.py", 3, timeout=120)
    if returncode is None:
        pytest.fail(f"check_abort.py hung instead of aborting:\n{log[-4000:]}")
    assert returncode != 0, log[-4000:]
    assert "rank 2 cannot complete a collective call (SystemExit: a signal handler" in log
    assert "aborting the communicator" in log
    assert "was not aborted" not in log


@pytest.mark.parametrize("ranks", [3])
def test_every_way_out_of_a_collective_call_reaches_every_rank(ranks, tmp_path):
    # Issue 13: KeyboardInterrupt, SystemExit and GeneratorExit on one rank,
    # inside a product or between two, and a real SIGINT at five moments, end
    # with every rank raising (a hang fails on the timeout); mismatched calls
    # raise a Python error on every rank.
    per_rank = run_under_mpi("check_failures.py", ranks, tmp_path / "failures.json", timeout=180)
    faulty = per_rank[-1]
    for exception in ("KeyboardInterrupt", "SystemExit", "GeneratorExit"):
        name = f"{exception} in a product"
        assert faulty[name] == f"{exception}: interrupted in a product"
        for healthy in per_rank[:-1]:
            assert healthy[name].startswith(
                f"CollectiveError: another rank failed in a collective call; "
                f"rank {ranks - 1}: {exception}: interrupted in a product (in eigsh("
            )
    name = "KeyboardInterrupt between products"
    assert faulty[name] == "KeyboardInterrupt: interrupted between products"
    assert faulty["argument error on one rank"].startswith("ValueError: `v0` must be finite")
    sigints = [name for name in faulty if name.startswith("SIGINT after") and "raise" not in name]
    assert len(sigints) == 5
    for name in sigints:
        assert faulty[name].startswith("KeyboardInterrupt")
    for healthy in per_rank[:-1]:
        for name in ("KeyboardInterrupt between products", "argument error on one rank"):
            assert healthy[name].startswith("CollectiveError: another rank failed")
            assert "(in leaving eigsh(" in healthy[name]
        for name in sigints:
            assert healthy[name].startswith(
                f"CollectiveError: another rank failed in a collective call; "
                f"rank {ranks - 1}: KeyboardInterrupt (in "
            )
    for outcomes in per_rank:
        timings = outcomes["timings"]
        for name in sigints:
            assert timings[f"{name}: seconds to raise"] < 5.0
        for name, shown in (
            ("eigsh with different k", "k=2"),
            ("eigsh against lobpcg", "entering lobpcg("),
            ("products of different shapes", "product of shape (6, 2)"),
            ("gradient against product", "product of shape (7,)"),
            ("estimators with different num_matvecs", "num_matvecs=12"),
        ):
            assert outcomes[name].startswith(
                "CollectiveError: the ranks are not making the same collective call"
            )
            assert f"rank {ranks - 1}: " in outcomes[name]
            assert shown in outcomes[name]
