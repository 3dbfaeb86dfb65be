#!/usr/bin/env python
"""Benchmark harness of tfhess_linop: ratios to baselines measured in the same run.

    python benchmarks/run.py                 # full run (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick         # smoke run (CI), under a minute
    python benchmarks/run.py --only mlp_f32 dense --repeats 5 --out /tmp/bench

Writes ``results.json`` and ``results.md`` into ``--out`` (default: this
folder) and prints a table as it goes. Every time is the median over
``--repeats`` interleaved rounds after warm-up, and is reported next to the
baseline measured in the same process and the same rounds; targets are
printed as PASS/FAIL beside the numbers and never fail the run.

Sections (``--only`` takes section names, case names or ``section/case``):

operator     gradient (yardstick) vs matvec in both HVP modes, the seed's eager
             HVP, matmat(k) vs k matvecs — cases xor, mlp_f32, mlp_f64,
             mlp_large, conv
dense        Hessian.dense() vs GradientTape.jacobian of the gradient: time and
             peak RSS, each in a fresh process — dense_1k, dense_5k (full only)
algorithms   HVPs and time of eigsh, lobpcg, power_iteration, randomized_svd,
             cg, pcg on mlp_f64
estimators   matvecs to a 5 % trace; SLQ density vs single matvecs, on mlp_f64
mpi          1 process (default threads) vs 2 ranks x 1 thread, mpi_mlp
peers        JAX, curvlinops (only when importable)
cli          tfhess-linop --help vs python -c "import numpy", fresh processes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import report  # noqa: E402
import timing  # noqa: E402

MPIEXEC = os.path.join(sys.prefix, "bin", "mpiexec")

SECTIONS = {
    "operator": ["xor", "mlp_f32", "mlp_f64", "mlp_large", "conv"],
    "dense": ["dense_1k", "dense_5k"],
    "algorithms": ["mlp_f64"],
    "estimators": ["mlp_f64"],
    "mpi": ["mpi_mlp"],
    "peers": ["jax", "curvlinops"],
    "cli": ["help"],
}

# Targets of issue #6: name -> (comparison, bound, checked on "ratio" or "value").
TARGETS = {
    "matvec / gradient": ("<=", 1.8, "ratio"),
    "matmat(32) / 32 matvecs": ("<=", 0.6, "ratio"),
    "seed eager HVP / matvec": (">=", 8.0, "ratio"),
    "dense time": ("<=", 0.6, "value"),
    "dense peak RSS": ("<=", 600.0, "value"),
    "top eigenvalue HVPs to 1e-6": ("<=", 40, "value"),
    "2-rank speedup": (">=", 1.5, "ratio"),
    "--help time": ("<=", 0.5, "value"),
}


class Settings:
    """Sizes and repeats of a quick or a full run."""

    def __init__(self, quick, repeats):
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
            "value": _plain(value),
            "unit": unit,
            "baseline": baseline,
            "baseline_value": _plain(baseline_value),
            "ratio": _plain(ratio),
            "target": None if target is None else _target_text(target),
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
        self.details[f"{section}/{case}"] = _plain(data)


def _target_text(name):
    op, bound, on = TARGETS[name]
    return f"{on} {op} {bound:g}"


def _plain(value):
    """JSON-ready: NumPy scalars and arrays to Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


# ---------------------------------------------------------------- operator


def bench_operator(name, settings, rec):
    import numpy as np

    import tfhess_linop as thl

    case = cases.CASES[name]
    if settings.operator_samples and case.samples > settings.operator_samples:
        case = cases.with_samples(case, settings.operator_samples)
    model, loss, x, y = cases.build(case)
    H_rr = thl.Hessian.from_keras(model, loss, x, y)
    H_fr = thl.Hessian.from_keras(model, loss, x, y, mode="forward-over-reverse")
    A_rr, A_fr = thl.as_linop(H_rr), thl.as_linop(H_fr)
    n = H_rr.n
    gradient = cases.gradient(model, loss, x, y)
    seed_hvp = cases.seed_hvp(model, loss, x, y)
    raw_hvp = cases.compiled_hvp(model, loss, x, y)
    rng = np.random.default_rng(7)
    v = rng.standard_normal(n)
    ks = [1, 8, 32] if name != "mlp_large" else []
    V = rng.standard_normal((n, max(ks, default=1)))

    reference = A_rr.matvec(v)
    scale = np.linalg.norm(reference)
    agreement = {
        "forward-over-reverse": np.linalg.norm(A_fr.matvec(v) - reference) / scale,
        "seed eager": np.linalg.norm(seed_hvp(v) - reference) / scale,
        "hand-written compiled": np.linalg.norm(raw_hvp(v) - reference) / scale,
    }
    if ks:
        batched = A_rr.matmat(V[:, :8])
        columns = np.column_stack([A_rr.matvec(V[:, j]) for j in range(8)])
        agreement["matmat(8) vs 8 matvecs"] = np.linalg.norm(batched - columns) / np.linalg.norm(
            columns
        )

    functions = {
        "gradient": gradient,
        "matvec": lambda: A_rr.matvec(v),
        "matvec_fr": lambda: A_fr.matvec(v),
        "hvp_direct": lambda: H_rr.hvp(v),
        "compiled_hvp": lambda: raw_hvp(v),
        "seed": lambda: seed_hvp(v),
    }
    for k in ks:
        block = np.ascontiguousarray(V[:, :k])
        functions[f"matmat_{k}"] = lambda block=block: A_rr.matmat(block)
    times = timing.compare(
        functions,
        repeats=settings.repeats,
        warmup=settings.warmup,
        sample_time=settings.sample_time,
    )
    t = {key: value["median"] for key, value in times.items()}

    def ratio(measure, baseline, scale=1.0):
        return timing.paired_ratio(times, measure, baseline, scale)

    sec = "operator"
    rec.row(
        sec,
        name,
        "gradient (yardstick)",
        t["gradient"],
        "s",
        note=f"n={n}, {case.samples} samples, {case.dtype}",
    )
    rec.row(
        sec,
        name,
        "matvec (reverse-over-reverse)",
        t["matvec"],
        "s",
        baseline="gradient",
        baseline_value=t["gradient"],
        ratio=ratio("matvec", "gradient"),
        target="matvec / gradient",
    )
    rec.row(
        sec,
        name,
        "matvec (forward-over-reverse)",
        t["matvec_fr"],
        "s",
        baseline="gradient",
        baseline_value=t["gradient"],
        ratio=ratio("matvec_fr", "gradient"),
    )
    rec.row(
        sec,
        name,
        "Hessian.hvp, no LinearOperator",
        t["hvp_direct"],
        "s",
        baseline="gradient",
        baseline_value=t["gradient"],
        ratio=ratio("hvp_direct", "gradient"),
    )
    rec.row(
        sec,
        name,
        "hand-written tf.function HVP",
        t["compiled_hvp"],
        "s",
        baseline="gradient",
        baseline_value=t["gradient"],
        ratio=ratio("compiled_hvp", "gradient"),
        note="reverse-over-reverse, flat float64 in/out, written in the benchmark",
    )
    rec.row(
        sec,
        name,
        "seed eager HVP",
        t["seed"],
        "s",
        baseline="matvec",
        baseline_value=t["matvec"],
        ratio=ratio("seed", "matvec"),
        target="seed eager HVP / matvec" if name.startswith("mlp") else None,
    )
    for k in ks:
        key = f"matmat_{k}"
        rec.row(
            sec,
            name,
            f"matmat(k={k})",
            t[key],
            "s",
            baseline=f"{k} matvecs",
            baseline_value=k * t["matvec"],
            ratio=ratio(key, "matvec", k),
            target="matmat(32) / 32 matvecs" if k == 32 else None,
        )
    rec.detail(
        sec,
        name,
        {
            "n": n,
            "samples": case.samples,
            "dtype": case.dtype,
            "relative_differences_to_matvec": agreement,
            "timings": times,
        },
    )


# ------------------------------------------------------------------- dense


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


def dense_jobs(name, settings):
    """label -> Job measuring `name`'s dense Hessian (started now)."""
    worker = [sys.executable, os.path.join(HERE, "dense_worker.py"), name]
    repeats = ["--repeats", str(settings.dense_repeats)]
    if settings.quick:
        # One process for both methods (peak RSS reset in between): CI time.
        return {"hessian+jacobian": Job([*worker, "hessian", "jacobian", *repeats])}
    runs = {"hessian": ["hessian"], "jacobian": ["jacobian"]}
    if name == "dense_5k":
        runs["hessian_b64"] = ["hessian", "--block-size", "64"]
    # Sequential, each in a fresh process: started lazily by `_Lazy`.
    return {label: _Lazy([*worker, *extra, *repeats]) for label, extra in runs.items()}


class _Lazy:
    """A Job started only when its records are asked for."""

    def __init__(self, command, **kwargs):
        self.command, self.kwargs = command, kwargs

    def records(self):
        return Job(self.command, **self.kwargs).records()


def bench_dense(name, settings, rec):
    sec = "dense"
    jobs = settings.jobs.pop((sec, name), None) or dense_jobs(name, settings)
    out = {}
    for label, job in jobs.items():
        try:
            for record in job.records():
                block = record["block_size"]
                key = record["method"] + (f"_b{block}" if block else "")
                out[key] = record
        except RuntimeError as exc:
            rec.skip(sec, f"{name}:{label}", str(exc)[:300])
    if "hessian" not in out:
        return
    h = out["hessian"]
    j = out.get("jacobian")
    is_5k = name == "dense_5k"
    note = f"n={h['n']}, {h['samples']} samples; result alone {h['result_mib'] * 1.048576:.0f} MB"
    rec.row(
        sec,
        name,
        "Hessian.dense() time (warm)",
        h["warm_s"],
        "s",
        baseline="jacobian" if j else None,
        baseline_value=j and j["warm_s"],
        ratio=j and h["warm_s"] / j["warm_s"],
        note=note,
    )
    if is_5k:
        rec.row(
            sec,
            name,
            "Hessian.dense() time (warm) vs target",
            h["warm_s"],
            "s",
            target="dense time",
        )
    rec.row(
        sec,
        name,
        "Hessian.dense() time (first call, with tracing)",
        h["cold_s"],
        "s",
        baseline="jacobian" if j else None,
        baseline_value=j and j["cold_s"],
        ratio=j and h["cold_s"] / j["cold_s"],
    )
    memory = h["peak_rss_delta_mib"] * 1.048576
    rec.row(
        sec,
        name,
        "Hessian.dense() peak RSS growth",
        memory,
        "MB",
        baseline="jacobian" if j else None,
        baseline_value=j and j["peak_rss_delta_mib"] * 1.048576,
        ratio=j and h["peak_rss_delta_mib"] / max(j["peak_rss_delta_mib"], 1e-9),
        target="dense peak RSS" if is_5k else None,
    )
    for label, record in out.items():
        if label.startswith("hessian_b"):
            rec.row(
                sec,
                name,
                f"Hessian.dense(block_size={record['block_size']}) time (warm)",
                record["warm_s"],
                "s",
                baseline="dense()",
                baseline_value=h["warm_s"],
                ratio=record["warm_s"] / h["warm_s"],
                note="diagnostic: smaller blocks",
            )
            rec.row(
                sec,
                name,
                f"Hessian.dense(block_size={record['block_size']}) peak RSS growth",
                record["peak_rss_delta_mib"] * 1.048576,
                "MB",
                baseline="dense()",
                baseline_value=memory,
                ratio=record["peak_rss_delta_mib"] / max(h["peak_rss_delta_mib"], 1e-9),
            )
    rec.detail(sec, name, out)


# -------------------------------------------------------------- algorithms


class _OperatorClock:
    """Accumulates the time spent inside a `HessianOperator`'s products.

    The instance's ``_matvec``/``_matmat`` are shadowed by timed wrappers;
    SciPy's public ``matvec``/``matmat`` call them, so every product is seen.
    """

    def __init__(self, A):
        self.seconds = 0.0
        for name in ("_matvec", "_matmat"):
            setattr(A, name, self._timed(getattr(A, name)))

    def _timed(self, method):
        def timed(X):
            start = time.perf_counter()
            try:
                return method(X)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


_CLOCKS = {}


def _counted(A, function, timings=None):
    """(result, HVPs, seconds) of `function()`, counting A's products.

    With a `timings` dict, also stores there the seconds spent inside A's
    products ("in_hvp_s") and outside them ("outside_hvp_s").
    """
    clock = _CLOCKS.get(id(A)) or _CLOCKS.setdefault(id(A), _OperatorClock(A))
    A.n_hvp = 0
    inside = clock.seconds
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = function()
    seconds = time.perf_counter() - start
    if timings is not None:
        timings["in_hvp_s"] = clock.seconds - inside
        timings["outside_hvp_s"] = seconds - timings["in_hvp_s"]
    return result, A.n_hvp, seconds


def _ladder(A, tols, run, error):
    """Run `run(tol)` down a ladder of tolerances; stop at the first within 1e-6."""
    steps = []
    for tol in tols:
        try:
            split = {}
            result, hvps, seconds = _counted(A, lambda tol=tol: run(tol), split)
            err = float(error(result))
        except Exception as exc:  # non-convergence is a result here
            steps.append({"tol": tol, "error": repr(exc)[:200]})
            continue
        steps.append({"tol": tol, "hvps": hvps, "seconds": seconds, "relative_error": err, **split})
        if err <= 1e-6:
            break
    return steps


def _first_within(steps, bound=1e-6):
    for step in steps:
        if step.get("relative_error", math.inf) <= bound:
            return step
    return None


def bench_algorithms(name, settings, rec):
    import numpy as np
    from scipy.sparse.linalg import LinearOperator

    import tfhess_linop as thl

    sec = "algorithms"
    case = cases.CASES[settings.algorithm_case]
    model, loss, x, y = cases.build(case)
    A = thl.as_linop(thl.Hessian.from_keras(model, loss, x, y))
    n = A.shape[0]
    A.matvec(np.ones(n))
    A.matmat(np.ones((n, 2)))
    details = {"model": case.name, "n": n, "samples": case.samples}

    # The 5 largest |λ| are among the 5 largest and the 5 smallest λ, so two
    # tight runs give the eigenvalue, singular value and λ_min references.
    ref_options = settings.reference_eigsh
    (w_la, _), ref_hvps, ref_s = _counted(A, lambda: thl.eigsh(A, which="LA", **ref_options))
    (w_sa, _), sa_hvps, _ = _counted(A, lambda: thl.eigsh(A, which="SA", **ref_options))
    top = np.sort(w_la)[::-1][:5]
    singular = np.sort(np.abs(np.concatenate([w_la, w_sa])))[::-1][:5]
    lambda_min = float(np.min(w_sa))
    details["reference"] = {
        "top_LA": top,
        "bottom_SA": np.sort(w_sa),
        "top_abs": singular,
        "hvps": ref_hvps + sa_hvps,
    }
    rec.row(
        sec,
        name,
        "reference: eigsh k={k} LA tol={tol:g}".format(**ref_options),
        ref_s,
        "s",
        note=f"{case.name}, n={n}; {ref_hvps} HVPs; lambda_1..5 = "
        + ", ".join(f"{w:.6g}" for w in top)
        + f"; lambda_min = {lambda_min:.6g}",
    )

    def top1_error(result):
        return abs(np.max(result[0]) - top[0]) / abs(top[0])

    def top5_error(result):
        return np.max(np.abs(np.sort(result[0])[::-1][:5] - top) / np.abs(top))

    problems = [
        (
            "eigsh top-1",
            lambda tol: thl.eigsh(A, k=1, which="LA", tol=tol),
            top1_error,
            settings.eig_tols,
            True,
        ),
        (
            "eigsh top-5",
            lambda tol: thl.eigsh(A, k=5, which="LA", tol=tol),
            top5_error,
            settings.eig_tols,
            False,
        ),
        (
            "lobpcg top-1",
            lambda tol: thl.lobpcg(A, 1, tol=tol, maxiter=settings.lobpcg_maxiter, rng=0),
            top1_error,
            settings.lobpcg_tols,
            False,
        ),
        (
            "lobpcg top-5",
            lambda tol: thl.lobpcg(A, 5, tol=tol, maxiter=settings.lobpcg_maxiter, rng=0),
            top5_error,
            settings.lobpcg_tols,
            False,
        ),
        (
            "power_iteration LA",
            lambda tol: thl.power_iteration(
                A, "LA", tol=tol, maxiter=settings.power_maxiter, rng=0
            ),
            lambda r: abs(r[0] - top[0]) / abs(top[0]),
            settings.power_tols,
            False,
        ),
    ]
    for label, run, error, tols, targeted in problems:
        steps = _ladder(A, tols, run, error)
        details[label] = steps
        best = _first_within(steps)
        last = next((s for s in reversed(steps) if "hvps" in s), None)
        if best is not None:
            rec.row(
                sec,
                name,
                f"{label}: HVPs to 1e-6",
                best["hvps"],
                "HVPs",
                target="top eigenvalue HVPs to 1e-6" if targeted else None,
                note=f"tol={best['tol']:g}, {best['seconds']:.3g} s "
                f"({best['outside_hvp_s'] / best['seconds']:.0%} outside HVPs), "
                f"rel. error {best['relative_error']:.1e}",
            )
        elif last is not None:
            rec.row(
                sec,
                name,
                f"{label}: HVPs (1e-6 not reached)",
                last["hvps"],
                "HVPs",
                target="top eigenvalue HVPs to 1e-6" if targeted else None,
                note=f"tol={last['tol']:g}, {last['seconds']:.3g} s "
                f"({last['outside_hvp_s'] / last['seconds']:.0%} outside HVPs), "
                f"rel. error {last['relative_error']:.1e}",
            )
        else:
            rec.skip(sec, f"{name}:{label}", steps[-1].get("error", "no result"))

    for method in ("subspace", "krylov"):
        split = {}
        (_, s, _), hvps, seconds = _counted(
            A,
            lambda method=method: thl.randomized_svd(
                A, 5, oversample=10, n_iter=2, method=method, rng=0
            ),
            split,
        )
        err = float(np.max(np.abs(s[:5] - singular) / singular))
        details[f"randomized_svd {method}"] = {
            "hvps": hvps,
            "seconds": seconds,
            "max_relative_error_top5": err,
            **split,
        }
        rec.row(
            sec,
            name,
            f"randomized_svd k=5 p=10 q=2 {method}",
            seconds,
            "s",
            note=f"{hvps} HVPs, {split['outside_hvp_s'] / seconds:.0%} of the time "
            f"outside HVPs; top-5 singular values max rel. error {err:.1e}",
        )

    # cg/pcg on H + shift I, shifted to be positive definite with condition ~1e3.
    shift = max(0.0, -lambda_min) + 1e-3 * float(top[0])
    shifted = LinearOperator(
        (n, n),
        matvec=lambda u: A.matvec(u) + shift * u,
        matmat=lambda U: A.matmat(U) + shift * U,
        dtype=np.float64,
    )
    b = np.random.default_rng(3).standard_normal(n)
    details["cg system"] = {
        "lambda_min": lambda_min,
        "shift": shift,
        "condition_estimate": (top[0] + shift) / (lambda_min + shift),
    }
    for label, solve in [
        ("cg", lambda: thl.cg(shifted, b, rtol=1e-6, maxiter=settings.cg_maxiter)),
        (
            "pcg rank=20",
            lambda: thl.pcg(
                shifted, b, rank=20, oversample=10, rtol=1e-6, maxiter=settings.cg_maxiter, rng=0
            ),
        ),
    ]:
        split = {}
        result, hvps, seconds = _counted(A, solve, split)
        residual = np.linalg.norm(shifted.matvec(result.x) - b) / np.linalg.norm(b)
        details[label] = {
            "hvps": hvps,
            "n_matvec": result.n_matvec,
            "info": result.info,
            "n_iter": result.n_iter,
            "seconds": seconds,
            "true_relative_residual": residual,
            "recurrence_residual_norm": result.residual_norm,
            **split,
        }
        rec.row(
            sec,
            name,
            f"{label} to rtol 1e-6 on H + {shift:.3g} I",
            hvps,
            "HVPs",
            note=f"{result.n_iter} iterations, info={result.info}, {seconds:.3g} s "
            f"({split['outside_hvp_s'] / seconds:.0%} outside HVPs), "
            f"true rel. residual {residual:.1e}",
        )
    rec.detail(sec, name, details)


# -------------------------------------------------------------- estimators


def bench_estimators(name, settings, rec):
    import numpy as np

    import tfhess_linop as thl

    sec = "estimators"
    case = cases.CASES[settings.algorithm_case]
    model, loss, x, y = cases.build(case)
    A = thl.as_linop(thl.Hessian.from_keras(model, loss, x, y))
    n = A.shape[0]
    A.matvec(np.ones(n))
    A.matmat(np.ones((n, 2)))
    details = {"model": case.name, "n": n, "samples": case.samples}

    # Reference: a large Hutchinson run, whose cost is HVPs only (a large
    # Hutch++ run spends most of its time in the QR of an n x m/3 block).
    reference, _, ref_s = _counted(
        A,
        lambda: thl.hutchinson_trace(
            A, settings.trace_reference_matvecs, rng=12345, block_size=100
        ),
    )
    ref, ref_se = reference
    details["reference"] = {
        "method": "hutchinson",
        "matvecs": settings.trace_reference_matvecs,
        "estimate": ref,
        "standard_error": ref_se,
        "seconds": ref_s,
    }
    rec.row(
        sec,
        name,
        f"reference trace: Hutchinson {settings.trace_reference_matvecs} matvecs",
        ref,
        "",
        note=f"{case.name}, n={n}; standard error {ref_se:.3g} "
        f"({abs(ref_se / ref):.1%}), {ref_s:.1f} s",
    )

    estimators = {
        "hutchinson": thl.hutchinson_trace,
        "hutch++": thl.hutchpp_trace,
        "xtrace": thl.xtrace,
    }
    for label, estimator in estimators.items():
        ladder = []
        for m in settings.trace_ladder:
            errors, seconds = [], []
            for seed in range(settings.trace_seeds):
                estimate, _, took = _counted(
                    A, lambda m=m, seed=seed, f=estimator: f(A, m, rng=seed)
                )
                errors.append(abs(estimate[0] - ref) / abs(ref))
                seconds.append(took)
            rms = float(np.sqrt(np.mean(np.square(errors))))
            ladder.append(
                {
                    "matvecs": m,
                    "rms_relative_error": rms,
                    "median_seconds": float(np.median(seconds)),
                }
            )
            if rms <= 0.05:
                break
        details[label] = ladder
        last = ladder[-1]
        reached = last["rms_relative_error"] <= 0.05
        rec.row(
            sec,
            name,
            f"trace {label}: matvecs to 5 %" + ("" if reached else " (not reached)"),
            last["matvecs"],
            "matvecs",
            note=f"RMS rel. error {last['rms_relative_error']:.1%} over "
            f"{settings.trace_seeds} seeds, {last['median_seconds']:.3g} s per estimate; "
            "ladder x2",
        )

    probes, steps = settings.slq
    ones = np.ones(n)
    single = timing.compare(
        {"matvec": lambda: A.matvec(ones)},
        repeats=settings.repeats,
        warmup=1,
        sample_time=settings.sample_time,
    )["matvec"]["median"]
    split = {}
    _, hvps, seconds = _counted(A, lambda: thl.spectral_density(A, probes, steps, rng=0), split)
    rec.row(
        sec,
        name,
        f"SLQ density {probes} probes x {steps} steps",
        seconds,
        "s",
        baseline=f"{hvps} single matvecs",
        baseline_value=hvps * single,
        ratio=seconds / (hvps * single),
        note=f"{hvps} HVPs in batches of {probes}; "
        f"{split['outside_hvp_s'] / seconds:.0%} of the time outside HVPs",
    )
    details["slq"] = {
        "probes": probes,
        "steps": steps,
        "hvps": hvps,
        "seconds": seconds,
        "single_matvec_s": single,
        **split,
    }
    rec.detail(sec, name, details)


# --------------------------------------------------------------------- mpi


def mpi_available():
    """None if MPI runs can be made, else the reason why not."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py not importable"
    if not os.path.exists(MPIEXEC):
        return f"{MPIEXEC} not found"
    return None


def mpi_jobs(settings):
    """label -> list of Jobs: 1 process and 2 ranks, alternated `mpi_pairs` times.

    The load of a shared machine changes from minute to minute; alternating
    the launches and taking the median of the per-pair speedups keeps one
    busy minute from deciding the result. Full runs add 2 ranks with
    TensorFlow's default threads (oversubscribed) once.
    """
    worker = [
        sys.executable,
        os.path.join(HERE, "mpi_worker.py"),
        "--samples",
        str(settings.mpi_samples),
        "--repeats",
        str(settings.mpi_repeats),
    ]
    ranks = [MPIEXEC, "-n", "2", *worker, "--mpi"]
    make = Job if settings.quick else _Lazy
    jobs = []
    for _ in range(settings.mpi_pairs):
        jobs.append(("1 process", make(worker, timeout=300)))
        jobs.append(("2 ranks", make(ranks, timeout=300)))
    if not settings.quick:
        jobs.append(
            (
                "2 ranks, default threads",
                make(ranks, env={"TFHESS_LINOP_THREADS": "default"}, timeout=300),
            )
        )
    return jobs


def bench_mpi(name, settings, rec):
    sec = "mpi"
    reason = mpi_available()
    if reason:
        rec.skip(sec, name, reason)
        return
    jobs = settings.jobs.pop((sec, name), None) or mpi_jobs(settings)
    out = {}
    for label, job in jobs:
        try:
            record = job.records()[0]
        except RuntimeError as exc:
            rec.skip(sec, f"{name}:{label}", str(exc)[:300])
            continue
        record["load_average"] = os.getloadavg()[0]
        out.setdefault(label, []).append(record)
    if "1 process" not in out or "2 ranks" not in out:
        return
    ones, twos = out["1 process"], out["2 ranks"]
    pairs = list(zip(ones, twos, strict=False))

    def median(values):
        return statistics.median(list(values))

    one_matvec = median(r["matvec_s"] for r in ones)
    two_matvec = median(r["matvec_s"] for r in twos)
    speedup = median(a["matvec_s"] / b["matvec_s"] for a, b in pairs)
    note = (
        f"n={ones[0]['n']}, {ones[0]['samples']} samples; median over {len(pairs)} "
        "alternated launches"
    )
    rec.row(sec, name, "matvec, 1 process (default threads)", one_matvec, "s", note=note)
    rec.row(
        sec,
        name,
        "matvec, 2 ranks x 1 thread",
        two_matvec,
        "s",
        baseline="1 process",
        baseline_value=one_matvec,
        ratio=speedup,
        target="2-rank speedup",
        note="ratio = speedup, median of per-pair speedups "
        + ", ".join(f"{a['matvec_s'] / b['matvec_s']:.2f}" for a, b in pairs),
    )
    rec.row(
        sec,
        name,
        "gradient, 2 ranks x 1 thread",
        median(r["gradient_s"] for r in twos),
        "s",
        baseline="1 process",
        baseline_value=median(r["gradient_s"] for r in ones),
        ratio=median(a["gradient_s"] / b["gradient_s"] for a, b in pairs),
        note="ratio = speedup",
    )
    inside = median(r["allreduce_in_matvec_s"] for r in twos)
    slowest = median(r["allreduce_in_matvec_max_s"] / r["matvec_s"] for r in twos)
    rec.row(
        sec,
        name,
        "Allreduce inside a matvec (rank 0)",
        inside,
        "s",
        baseline="2-rank matvec",
        baseline_value=two_matvec,
        ratio=median(r["allreduce_in_matvec_s"] / r["matvec_s"] for r in twos),
        note="ratio = MPI fraction (includes waiting for the slower rank); max over "
        f"ranks {slowest:.1%}",
    )
    bare = median(r["bare_allreduce_s"] for r in twos)
    rec.row(
        sec,
        name,
        "bare Allreduce of n+1 float64",
        bare,
        "s",
        baseline="2-rank matvec",
        baseline_value=two_matvec,
        ratio=bare / two_matvec,
        note="after a barrier: the communication alone",
    )
    if "2 ranks, default threads" in out:
        over = out["2 ranks, default threads"][0]
        rec.row(
            sec,
            name,
            "matvec, 2 ranks x default threads",
            over["matvec_s"],
            "s",
            baseline="1 process",
            baseline_value=one_matvec,
            ratio=one_matvec / over["matvec_s"],
            note="TFHESS_LINOP_THREADS=default (oversubscribed); ratio = speedup",
        )
    rec.detail(sec, name, out)


# ------------------------------------------------------------------- peers


def bench_peers(name, settings, rec):
    import importlib

    import peers

    sec = "peers"
    module = {"jax": "jax", "curvlinops": "curvlinops"}[name]
    try:
        importlib.import_module(module)
    except Exception as exc:
        rec.skip(sec, name, f"{module} not importable ({type(exc).__name__})")
        return
    case = cases.CASES["mlp_f32"]
    if settings.operator_samples:
        case = cases.with_samples(case, settings.operator_samples)
    try:
        functions = peers.build(name, case)
    except Exception as exc:
        rec.skip(sec, name, f"setup failed: {exc!r}"[:300])
        return
    times = timing.compare(
        functions,
        repeats=settings.repeats,
        warmup=settings.warmup,
        sample_time=settings.sample_time,
    )
    t = {key: value["median"] for key, value in times.items()}
    rec.row(sec, name, "gradient", t["gradient"], "s", note=case.description)
    rec.row(
        sec,
        name,
        "HVP",
        t["hvp"],
        "s",
        baseline="its gradient",
        baseline_value=t["gradient"],
        ratio=t["hvp"] / t["gradient"],
    )
    rec.detail(sec, name, times)


# --------------------------------------------------------------------- cli


def bench_cli(name, settings, rec):
    import startup

    sec = "cli"
    times = startup.measure(repeats=max(settings.repeats, 5))
    baseline = times["python -c 'import numpy'"]["median"]
    for command, entry in times.items():
        if command.endswith("--help"):
            rec.row(
                sec,
                name,
                command,
                entry["median"],
                "s",
                baseline="python -c 'import numpy'",
                baseline_value=baseline,
                ratio=entry["ratio"],
                target="--help time",
                note="fresh process each; no TensorFlow import",
            )
    rec.detail(sec, name, times)


RUNNERS = {
    "operator": bench_operator,
    "dense": bench_dense,
    "algorithms": bench_algorithms,
    "estimators": bench_estimators,
    "mpi": bench_mpi,
    "peers": bench_peers,
    "cli": bench_cli,
}


def plan(settings, only):
    items = []
    for section, names in SECTIONS.items():
        for name in names:
            if section == "dense" and name not in settings.dense_cases:
                continue
            if only and not ({section, name, f"{section}/{name}"} & set(only)):
                continue
            items.append((section, name))
    return items


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark tfhess_linop against baselines measured in the same run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small smoke run (CI)")
    size.add_argument("--full", action="store_true", help="the full run (default)")
    parser.add_argument(
        "--only", nargs="+", metavar="CASE", help="sections, cases or section/case to run"
    )
    parser.add_argument("--out", default=HERE, help="output folder (default: benchmarks/)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per measurement (default 3 quick, 9 full)",
    )
    args = parser.parse_args(argv)
    known = set(SECTIONS) | {n for names in SECTIONS.values() for n in names}
    known |= {f"{s}/{n}" for s, names in SECTIONS.items() for n in names}
    for item in args.only or []:
        if item not in known:
            parser.error(f"--only: unknown {item!r}; choose from {sorted(known)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    settings = Settings(args.quick, args.repeats)
    started = time.perf_counter()
    import tensorflow as tf

    meta = timing.machine_info()
    meta.update(
        {
            "mode": "quick" if args.quick else "full",
            "repeats": settings.repeats,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        }
    )
    rec = Recorder()
    rec.plan = [f"{s}/{n}" for s, n in plan(settings, args.only)]
    print(report.header(meta), flush=True)
    if settings.quick:
        # Timings do not matter in a smoke run: start the workers now, in
        # parallel with the in-process sections, to bound CI time.
        for section, name in plan(settings, args.only):
            if section == "dense":
                settings.jobs[(section, name)] = dense_jobs(name, settings)
            elif section == "mpi" and mpi_available() is None:
                settings.jobs[(section, name)] = mpi_jobs(settings)
    for section, name in plan(settings, args.only):
        print(f"\n== {section}/{name}", flush=True)
        began = time.perf_counter()
        try:
            RUNNERS[section](name, settings, rec)
        except Exception as exc:
            traceback.print_exc()
            rec.skip(section, name, f"error: {exc!r}"[:300])
        print(f"   ({time.perf_counter() - began:.1f} s)", flush=True)
    meta["duration_s"] = time.perf_counter() - started
    results = {
        "meta": meta,
        "plan": rec.plan,
        "targets": {k: _target_text(k) for k in TARGETS},
        "results": rec.rows,
        "skipped": rec.skipped,
        "details": rec.details,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1, allow_nan=True)
    with open(os.path.join(args.out, "results.md"), "w") as handle:
        handle.write(report.markdown(results))
    print(f"\nwrote {args.out}/results.json and results.md in {meta['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
