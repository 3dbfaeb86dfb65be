"""Shared plumbing of the benchmark sections: settings, the result recorder, workers.

No TensorFlow at import: the driver imports this before choosing sections.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import report

HERE = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = os.path.join(sys.prefix, "bin", "mpiexec")

# Targets of issues #6 and #15: name -> (comparison, bound, checked on "ratio" or "value").
TARGETS = {
    "matvec / gradient": ("<=", 1.8, "ratio"),
    "matmat(32) / 32 matvecs": ("<=", 0.6, "ratio"),
    "seed eager HVP / matvec": (">=", 8.0, "ratio"),
    "dense time": ("<=", 0.6, "value"),
    "dense peak RSS": ("<=", 600.0, "value"),
    "top eigenvalue HVPs to 1e-6": ("<=", 40, "value"),
    "2-rank speedup": (">=", 1.5, "ratio"),
    "--help time": ("<=", 0.5, "value"),
    "tfhess_linop / best peer": ("<=", 0.8, "ratio"),
    "fixed-point matvec / gradient": ("<=", 1.15, "ratio"),
    "matmat(32) per column / matvec": ("<=", 1.0, "ratio"),
    "matmat(32) per column / gradient": ("<=", 1.2, "ratio"),
}


class Settings:
    """Sizes and repeats of a quick or a full run."""

    def __init__(self, quick, repeats, peers_python=None):
        self.quick = quick
        self.repeats = repeats or (2 if quick else 9)
        self.warmup = 1 if quick else 2
        self.sample_time = 0.0 if quick else 0.05
        # Quick runs shrink the data, never the models: every case still runs.
        self.operator_samples = 16 if quick else None
        # Algorithms and estimators: the n = 101,770 MLP in float64; a smoke run
        # uses the n = 4,998 one (its dense linear algebra would dominate).
        self.algorithm_case = "small_f64" if quick else "mlp_f64"
        self.dense_cases = ["dense_1k"] if quick else ["dense_1k", "dense_5k"]
        self.dense_repeats = 1
        self.reference_eigsh = (
            dict(k=5, tol=1e-8, ncv=20) if quick else dict(k=6, tol=1e-12, ncv=40)
        )
        self.eig_tols = [1e-4] if quick else [1e-2, 1e-3, 1e-4, 1e-6, 0]
        self.lobpcg_tols = [1e-3] if quick else [1e-3, 1e-4, 1e-5]
        self.lobpcg_maxiter = 20 if quick else 200
        self.power_tols = [1e-2] if quick else [1e-3, 1e-4, 1e-5]
        self.power_maxiter = 30 if quick else 1000
        self.cg_maxiter = 100 if quick else 2000
        self.trace_reference_matvecs = 60 if quick else 1000
        self.trace_ladder = [12] if quick else [12, 24, 48, 96, 192, 384, 768]
        self.trace_seeds = 1 if quick else 4
        self.slq = (2, 10) if quick else (10, 80)
        self.mpi_samples = 512 if quick else 8192
        self.mpi_repeats = 2 if quick else 15
        self.mpi_pairs = 1 if quick else 3
        # Peers (issue #15): rounds per metric, alternated with the worker's.
        self.peers_python = peers_python
        self.peer_repeats = repeats or (2 if quick else 7)
        self.peer_algorithm_repeats = min(self.peer_repeats, 2 if quick else 3)
        self.peer_timeout = 600
        # Roofline: the GEMM of the physical limit, and the cases it runs on.
        # A smoke run leaves out the blocks (their first call traces for seconds).
        self.gemm_size = 256 if quick else 4096
        self.roofline_cases = ["mlp_f32"] if quick else ["mlp_f32", "mlp_large"]
        self.roofline_metrics = ("matvec", "matvec_scratch", "matvec_fixed")
        if not quick:
            self.roofline_metrics += ("matmat32", "matmat32_scratch", "matmat32_fixed")
        self.jobs = {}


class Recorder:
    """Collects result rows, prints each as it comes."""

    def __init__(self):
        self.rows = []
        self.skipped = []
        self.details = {}
        self.plan = []

    def row(
        self,
        section,
        case,
        measure,
        value,
        unit,
        *,
        baseline=None,
        baseline_value=None,
        ratio=None,
        target=None,
        note="",
    ):
        passed = None
        if target is not None:
            op, bound, on = TARGETS[target]
            checked = ratio if on == "ratio" else value
            if checked is None or not math.isfinite(checked):
                passed = False
            else:
                passed = checked <= bound if op == "<=" else checked >= bound
        row = {
            "section": section,
            "case": case,
            "measure": measure,
            "value": plain(value),
            "unit": unit,
            "baseline": baseline,
            "baseline_value": plain(baseline_value),
            "ratio": plain(ratio),
            "target": None if target is None else target_text(target),
            "target_name": target,
            "passed": passed,
            "note": note,
        }
        self.rows.append(row)
        print(report.format_row(row), flush=True)
        return row

    def skip(self, section, case, reason):
        self.skipped.append({"section": section, "case": case, "reason": reason})
        print(f"  [skipped] {section}/{case}: {reason}", flush=True)

    def detail(self, section, case, data):
        self.details[f"{section}/{case}"] = plain(data)


def target_text(name):
    op, bound, on = TARGETS[name]
    return f"{on} {op} {bound:g}"


def plain(value):
    """JSON-ready: NumPy scalars and arrays to Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class Job:
    """A worker subprocess whose JSON output lines are collected on demand."""

    def __init__(self, command, *, env=None, timeout=600):
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        environment.update(env or {})
        self.timeout = timeout
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=HERE,
        )

    def records(self):
        """The JSON records printed by the worker; RuntimeError if it failed."""
        left = max(1.0, self.timeout - (time.perf_counter() - self.started))
        try:
            stdout, stderr = self.process.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise RuntimeError(f"timed out after {self.timeout} s") from None
        records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        if self.process.returncode != 0 or not records:
            tail = (stderr or stdout).strip().splitlines()[-4:]
            raise RuntimeError(f"exit {self.process.returncode}: " + " | ".join(tail))
        return records


class Lazy:
    """A Job started only when its records are asked for."""

    def __init__(self, command, **kwargs):
        self.command, self.kwargs = command, kwargs

    def records(self):
        return Job(self.command, **self.kwargs).records()
