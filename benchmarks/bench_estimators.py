"""The estimators section: matvecs to a 5 % trace, SLQ density against single matvecs."""

from __future__ import annotations

import cases
import timing


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
    reference, _, ref_s = timing.counted(
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
                estimate, _, took = timing.counted(
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
    _, hvps, seconds = timing.counted(
        A, lambda: thl.spectral_density(A, probes, steps, rng=0), split
    )
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
