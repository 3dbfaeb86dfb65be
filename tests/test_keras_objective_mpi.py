"""The Hessian of Keras' own objective under ``mpiexec -n 2`` and ``-n 3`` (uneven shards)."""

import pytest

pytest.importorskip("mpi4py")

from test_mpi import run_under_mpi

CASES = [
    "masked mean with sample weights",
    "regularizers and loss_weights",
    "named inputs and outputs",
]


@pytest.mark.parametrize("ranks", [2, 3])
def test_keras_objective_on_every_rank_equals_the_serial_reference(ranks, tmp_path):
    report = run_under_mpi("check_keras_objective.py", ranks, tmp_path / "report.json", timeout=480)
    assert report["size"] == ranks
    assert report["failures"] == []
    for case in CASES:
        for shard in (True, False):
            for what in ("dense", "gradient", "loss", "hvp"):
                assert f"{case}, shard={shard}: {what}" in report["checks"]
                assert f"{case}, shard={shard}: {what} identical on all ranks" in report["checks"]
