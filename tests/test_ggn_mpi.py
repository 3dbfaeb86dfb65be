"""GGN, empirical Fisher and Monte Carlo Fisher under ``mpiexec -n 2`` and ``-n 3``."""

import pytest

pytest.importorskip("mpi4py")

from test_mpi import run_under_mpi


@pytest.mark.parametrize("ranks", [2, 3])
def test_curvature_operators_equal_serial_on_every_rank(ranks, tmp_path):
    report = run_under_mpi("check_ggn.py", ranks, tmp_path / "report.json", timeout=420)
    assert report["size"] == ranks
    assert not report["failures"], report["failures"]
    checks = set(report["checks"])
    for name in ("GGN", "EmpiricalFisher", "Fisher mc"):
        assert f"{name}: as serial" in checks
        assert f"{name} identical on all ranks" in checks
    assert "GGN eigsh identical on all ranks" in checks
