"""Any point, SciPy optimisers and inverses under ``mpiexec -n 2`` and ``-n 3``."""

import pytest

pytest.importorskip("mpi4py")

from test_mpi import run_under_mpi

METHODS = ["trust-krylov", "trust-ncg", "Newton-CG", "trust-exact", "BFGS", "L-BFGS-B"]


@pytest.mark.parametrize("ranks", [2, 3])
def test_optimisers_and_inverses_agree_with_serial_on_every_rank(ranks, tmp_path):
    report = run_under_mpi("check_optimize.py", ranks, tmp_path / "report.json", timeout=420)
    assert report["size"] == ranks
    checks = set(report["checks"])
    for expected in (
        "parameters identical on all ranks",
        "set_parameters: loss as serial",
        "different w on the ranks: ValueError on every rank",
        "NaN on one rank: every rank raises",
        "at: restored",
        "healthy afterwards",
        "trust-constr with hess=bound operator",
        "trust-constr identical on all ranks",
        "bound Hessian: as serial",
        "bound Hessian identical on all ranks",
        "minimize MLP trust-krylov identical on all ranks",
        "damped inverse identical on all ranks",
        "shift-invert eigsh: eigvalsh",
        "shift-invert eigsh identical on all ranks",
    ):
        assert expected in checks, expected
    for method in METHODS:
        assert f"minimize {method}: lstsq" in checks
        assert f"minimize {method}: model at res.x" in checks
        assert f"minimize {method} identical on all ranks" in checks
