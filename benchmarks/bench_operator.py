"""The operator section: matvec and matmat against the compiled gradient and the seed's HVP."""

from __future__ import annotations

import cases
import timing


def bench_operator(name, settings, rec):
    import numpy as np

    import tfhess_linop as thl

    case = cases.CASES[name]
    if settings.operator_samples and case.samples > settings.operator_samples:
        case = cases.with_samples(case, settings.operator_samples)
    model, loss, x, y = cases.build(case)
    H_rr = thl.Hessian.from_keras(model, loss, x, y)
    H_fr = thl.Hessian.from_keras(model, loss, x, y, mode="forward-over-reverse")
    H_kept = thl.Hessian.from_keras(model, loss, x, y)
    # Products from scratch here: the kept passes (the default since
    # `keep_passes`) are timed on a Hessian of their own.
    kept = hasattr(H_rr, "keep_passes")
    if kept:
        H_rr.keep_passes = False
    A_rr, A_fr, A_kept = thl.as_linop(H_rr), thl.as_linop(H_fr), thl.as_linop(H_kept)
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
        "passes kept": np.linalg.norm(A_kept.matvec(v) - reference) / scale,
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
        "matvec_kept": lambda: A_kept.matvec(v),
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
        note="from scratch (keep_passes=False)" if kept else "",
    )
    rec.row(
        sec,
        name,
        "matvec, passes kept between products (the default)",
        t["matvec_kept"],
        "s",
        baseline="gradient",
        baseline_value=t["gradient"],
        ratio=ratio("matvec_kept", "gradient"),
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
