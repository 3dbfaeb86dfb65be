"""The dense section: Hessian.dense() against GradientTape.jacobian, each in a fresh process."""

from __future__ import annotations

import os
import sys

from harness import HERE, Job, Lazy


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
    # Sequential, each in a fresh process: started lazily by `Lazy`.
    return {label: Lazy([*worker, *extra, *repeats]) for label, extra in runs.items()}


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
