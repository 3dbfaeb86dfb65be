"""Sharded data sources under ``mpiexec -n 2`` and ``-n 3`` (uneven shards and batches)."""

import pytest

pytest.importorskip("mpi4py")

from test_mpi import run_under_mpi

N = 23


@pytest.fixture(scope="module", params=[2, 3], ids=["2 ranks", "3 ranks"])
def report(request, tmp_path_factory):
    output = tmp_path_factory.mktemp("sources") / "report.json"
    report = run_under_mpi("check_sources.py", request.param, output, timeout=180)
    assert report["size"] == request.param
    return report


def test_shards_cover_every_sample_once(report):
    for name, per_rank in report["cases"].items():
        held = sorted(index for r in per_rank for index in r["indices"])
        assert held == list(range(N)), name
        assert [r["n_local"] for r in per_rank] == [len(r["indices"]) for r in per_rank], name
        assert all(r["n_global"] == N for r in per_rank), name


def test_datasets_are_sharded_by_batches_round_robin(report):
    ranks = report["size"]
    # 23 samples in batches of 7 (7, 7, 7, 2): rank r holds batches r, r + P, ...
    expected = [[*range(7), *range(14, 21)], [*range(7, 14), 21, 22]]
    if ranks == 3:
        expected = [[*range(7), 21, 22], list(range(7, 14)), list(range(14, 21))]
    for name in ("Dataset batched", "Dataset unbatched", "PyDataset"):
        assert [r["indices"] for r in report["cases"][name]] == expected, name
    for name in ("Dataset, one batch", "PyDataset, one batch"):
        assert [r["n_local"] for r in report["cases"][name]] == [N] + [0] * (ranks - 1), name


def test_a_failure_on_one_rank_raises_on_every_rank(report):
    ranks, failures = report["size"], report["failures"]
    healthy = ["CollectiveError"] * (ranks - 1)
    assert failures["NaN in one rank's arrays"] == [*healthy, "ValueError"]
    assert failures["NaN in one rank's Dataset"] == [*healthy, "ValueError"]
    assert failures["a generator on one rank"] == [*healthy, "TypeError"]
    assert failures["dtypes differ between ranks"] == ["ValueError"] * ranks
    assert failures["Dataset shuffled without a seed"] == ["ValueError"] * ranks
    assert failures["one rank without samples"] == ["no error"] * ranks
