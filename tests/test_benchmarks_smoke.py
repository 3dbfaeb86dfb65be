"""Smoke test of the benchmark harness: ``benchmarks/run.py --quick`` runs end to end.

It checks that the harness still works against the package, not how fast the
package is: every planned case is in the JSON (measured, or skipped with a
reason where an optional dependency is missing), every number is finite, and
the Markdown report is written. About a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"

# Cases a quick run must measure; only optional peers (and MPI without
# mpi4py/mpiexec) may be skipped.
REQUIRED = {
    "operator/xor",
    "operator/mlp_f32",
    "operator/mlp_f64",
    "operator/mlp_large",
    "operator/conv",
    "dense/dense_1k",
    "algorithms/mlp_f64",
    "estimators/mlp_f64",
    "roofline/mlp_f32",
    "cli/help",
}
# The peers run only with their own interpreter (never here: see below).
OPTIONAL = {"mpi/mpi_mlp", "peers/mlp_f32", "peers/mlp_large", "peers/conv"}
PEERS_ENV = "TFHESS_LINOP_PEERS_PYTHON"


def _finite_numbers(value, where):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        assert math.isfinite(value), f"non-finite number at {where}: {value}"
    elif isinstance(value, dict):
        for key, item in value.items():
            _finite_numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite_numbers(item, f"{where}[{index}]")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop(PEERS_ENV, None)  # the smoke run never runs the peers
    completed = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with open(out / "results.json") as handle:
        results = json.load(handle)
    return results, out, completed.stdout


@pytest.mark.timeout(360)
def test_quick_run_has_every_case_with_finite_numbers(quick_results):
    results, _, _ = quick_results
    assert set(results["plan"]) == REQUIRED | OPTIONAL
    measured = {f"{row['section']}/{row['case']}" for row in results["results"]}
    skipped = {f"{item['section']}/{item['case']}": item["reason"] for item in results["skipped"]}
    assert REQUIRED <= measured, f"missing: {REQUIRED - measured}; skipped: {skipped}"
    # Parts of a required case may not be skipped either (e.g. one method).
    assert not [key for key in skipped if key.split(":")[0] in REQUIRED], skipped
    for key in OPTIONAL - measured:
        assert skipped.get(key), f"{key} neither measured nor skipped"
    for index, row in enumerate(results["results"]):
        assert isinstance(row["value"], (int, float)), row
        _finite_numbers(row, f"results[{index}]")
    _finite_numbers(results["details"], "details")
    for key in ("cpu_model", "logical_cores", "versions", "date_utc", "duration_s"):
        assert key in results["meta"]
    assert "tensorflow" in results["meta"]["versions"]


@pytest.mark.timeout(360)
def test_quick_run_reports_targets_and_markdown(quick_results):
    results, out, stdout = quick_results
    targets = [row for row in results["results"] if row["passed"] is not None]
    names = {row["target_name"] for row in targets}
    assert {
        "matvec / gradient",
        "matmat(32) / 32 matvecs",
        "seed eager HVP / matvec",
        "top eigenvalue HVPs to 1e-6",
    } <= names
    assert "fixed-point matvec / gradient" in names
    markdown = (out / "results.md").read_text()
    assert "## Targets" in markdown and "| mlp_f32 |" in markdown
    assert "PASS" in stdout or "FAIL" in stdout
    rates = [row for row in results["results"] if row["unit"] == "GFLOP/s"]
    assert rates and all(row["value"] > 0 for row in rates)


def test_quick_run_skips_the_peers_with_a_note(quick_results):
    results, _, _ = quick_results
    skipped = {f"{item['section']}/{item['case']}": item["reason"] for item in results["skipped"]}
    for key in ("peers/mlp_f32", "peers/mlp_large", "peers/conv"):
        assert "--peers-python" in skipped[key] and PEERS_ENV in skipped[key]


@pytest.mark.timeout(120)
def test_peer_worker_without_pytorch_reports_why(tmp_path):
    """The worker in an interpreter without PyTorch (this one) answers with the reason."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_peers
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    case = tmp_path / "case.npz"
    case.write_bytes(b"")
    with pytest.raises(RuntimeError, match="torch"):
        bench_peers.PeerWorker(sys.executable, str(case), timeout=60)


def test_update_replaces_only_the_sections_run(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def results(plan, value, date):
        rows = [{"section": k.split("/")[0], "case": k.split("/")[1], "value": value} for k in plan]
        meta = {
            "date_utc": date,
            "argv": [],
            "load_average_at_start": [0.0],
            "duration_s": 1.0,
            "versions": {},
        }
        return {
            "meta": meta,
            "plan": plan,
            "targets": {},
            "results": rows,
            "skipped": [],
            "details": {k: value for k in plan},
        }

    path = tmp_path / "results.json"
    path.write_text(json.dumps(results(["operator/xor", "peers/conv"], 1, "old")))
    merged = report.merge(str(path), results(["peers/conv"], 2, "new"))
    assert merged["plan"] == ["operator/xor", "peers/conv"]
    assert [(r["case"], r["value"]) for r in merged["results"]] == [("xor", 1), ("conv", 2)]
    assert merged["details"] == {"operator/xor": 1, "peers/conv": 2}
    assert merged["meta"]["date_utc"] == "old"
    assert [u["date_utc"] for u in merged["meta"]["updates"]] == ["new"]
