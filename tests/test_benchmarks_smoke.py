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
    "cli/help",
}
OPTIONAL = {"mpi/mpi_mlp", "peers/jax", "peers/curvlinops"}


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
    markdown = (out / "results.md").read_text()
    assert "## Targets" in markdown and "| mlp_f32 |" in markdown
    assert "PASS" in stdout or "FAIL" in stdout
