"""`CurvatureMonitor` under ``mpiexec -n 2`` and ``-n 3`` (uneven shards: 12/11, 8/8/7)."""

import pytest

pytest.importorskip("mpi4py")

from test_mpi import run_under_mpi


@pytest.mark.parametrize("ranks", [2, 3])
def test_monitor_logs_the_serial_values_identically_on_every_rank(ranks, tmp_path):
    report = run_under_mpi("check_curvature_monitor.py", ranks, tmp_path / "report.json")
    assert report["size"] == ranks
    assert report["failures"] == []
    for name in ("eig_1", "eig_2", "eig_min", "trace"):
        assert f"{name}: as serial" in report["checks"]
        assert f"{name} identical on all ranks" in report["checks"]
    assert "products identical on all ranks" in report["checks"]
    assert "weights identical on all ranks" in report["checks"]
