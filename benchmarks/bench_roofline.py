"""The roofline section: achieved GFLOP/s of the products against TF's best GEMM.

The physical limit of a product on this machine is the float32 matrix
multiply throughput TensorFlow reaches, measured here on a large square
GEMM and on the model's own layer shapes. The FLOPs of a pass are counted
analytically for an MLP with layer widths s_0..s_L on B samples: with
U_l = 2 B s_(l-1) s_l, the FLOPs of one layer's matrix product,

- gradient: forward U_l, backward dW U_l, dX U_l (not for the first layer):
  2 U_1 + 3 sum_(l>=2) U_l;
- Hessian-vector product, reverse-over-reverse from scratch: the gradient's
  passes plus the tangent forward (1 U_1, 2 U_l) and tangent backward
  (1 U_1, 4 U_l) passes: 4 U_1 + 9 sum U_l;
- a product at a fixed point (the primal passes kept): 2 U_1 + 6 sum U_l;
  so is a plain product where the Hessian keeps the passes between
  products (`keep_passes`, the default): the section times it in a run at
  one point;
- matmat(k) per column from scratch: a fixed-point product plus a
  gradient's passes / k.

Elementwise work (tanh, softmax) is O(B s) and left out. These are the
FLOPs of the computation, whatever route the package takes.
"""

from __future__ import annotations

import itertools
import random
import statistics

import cases
import numpy as np
import tf_metrics
import timing


def layer_flops(case, samples):
    widths = case.layers
    return [2.0 * samples * a * b for a, b in itertools.pairwise(widths)]


def pass_flops(case, samples, columns=tf_metrics.BLOCK, kept=True):
    """Analytic FLOPs of the gradient, products and block columns.

    `kept`: whether the plain ``matvec`` and ``matmat32`` keep the passes
    of their point (versions with `keep_passes`), or compute from scratch.
    """
    first, *rest = layer_flops(case, samples)
    gradient = 2 * first + 3 * sum(rest)
    fixed = 2 * first + 6 * sum(rest)
    scratch = 4 * first + 9 * sum(rest)
    column = fixed + gradient / columns
    return {
        "gradient": gradient,
        "matvec": fixed if kept else scratch,
        "matvec_scratch": scratch,
        "matvec_fixed": fixed,
        "hand-written HVP": scratch,
        "matmat32": fixed if kept else column,
        "matmat32_scratch": column,
        "matmat32_fixed": fixed,
    }


def gemms(case, samples, size):
    """name -> (m, k, n): the square GEMM and the model's layer products."""
    out = {f"GEMM {size}^3": (size, size, size)}
    for a, b in itertools.pairwise(case.layers):
        out[f"GEMM {samples}x{a}x{b}"] = (samples, a, b)
    return out


def _gemm(m, k, n):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((m, k)), tf.float32)
    b = tf.constant(rng.standard_normal((k, n)), tf.float32)
    product = tf.function(lambda: tf.matmul(a, b))
    return lambda: product()


def bench_roofline(name, settings, rec):
    sec = "roofline"
    case = cases.CASES[name]
    if settings.operator_samples:
        case = cases.with_samples(case, settings.operator_samples)
    model, loss, x, y = cases.build(case)
    side = tf_metrics.TFSide(model, loss, x, y)
    raw_hvp = cases.compiled_hvp(model, loss, x, y)
    impls = {"gradient": tf_metrics.Impl(side.gradient)}
    impls["hand-written HVP"] = tf_metrics.Impl(lambda: raw_hvp(side.v))
    for metric in settings.roofline_metrics:
        for impl in side.metric(metric).values():
            impls[metric] = impl
    shapes = gemms(case, case.samples, settings.gemm_size)
    for label, (m, k, n) in shapes.items():
        impls[label] = tf_metrics.Impl(_gemm(m, k, n))
    numbers = tf_metrics.numbers(
        impls, warmup=settings.warmup, sample_time=settings.sample_time, algorithm=False
    )
    rounds = []
    order = list(impls)
    for r in range(settings.repeats):
        random.Random(r).shuffle(order)
        rounds.append({label: tf_metrics.measure(impls[label], numbers[label]) for label in order})

    def seconds(label):
        return statistics.median(r[label]["seconds"] for r in rounds)

    def ratio(label, baseline):
        return statistics.median(r[label]["seconds"] / r[baseline]["seconds"] for r in rounds)

    flops = {label: 2.0 * m * k * n for label, (m, k, n) in shapes.items()}
    flops.update(pass_flops(case, case.samples, kept=side.keeps_passes))
    rates = {label: flops[label] / seconds(label) / 1e9 for label in impls}
    best = max(shapes, key=lambda label: rates[label])
    for label in shapes:
        rec.row(
            sec,
            name,
            f"{label} float32",
            rates[label],
            "GFLOP/s",
            note=f"{seconds(label) * 1e3:.3g} ms per call" + (" (best)" if label == best else ""),
        )
    for label in impls:
        if label in shapes:
            continue
        rec.row(
            sec,
            name,
            f"{label}: achieved GFLOP/s",
            rates[label],
            "GFLOP/s",
            baseline=best,
            baseline_value=rates[best],
            ratio=rates[label] / rates[best],
            note=f"{flops[label] / 1e6:.0f} MFLOP (per column for blocks), "
            f"{seconds(label) * 1e3:.3g} ms",
        )
    targeted = [
        ("matvec_fixed", "gradient", "fixed-point matvec / gradient", "matvec at a fixed point"),
        (
            "matmat32",
            "matvec",
            "matmat(32) per column / matvec",
            "matmat(32) per column vs matvec",
        ),
        (
            "matmat32_fixed",
            "matvec_fixed",
            None,
            "matmat(32) per column at a fixed point vs a fixed-point matvec",
        ),
        (
            "matmat32",
            "gradient",
            "matmat(32) per column / gradient" if name == "mlp_f32" else None,
            "matmat(32) per column vs gradient",
        ),
        ("matvec", "gradient", None, "matvec vs gradient"),
        ("matvec_scratch", "gradient", None, "matvec from scratch vs gradient"),
        (
            "matmat32_scratch",
            "matvec_scratch",
            None,
            "matmat(32) per column from scratch vs a matvec from scratch",
        ),
    ]
    for label, baseline, target, measure in targeted:
        if label in impls and baseline in impls:
            rec.row(
                sec,
                name,
                measure,
                seconds(label),
                "s",
                baseline=baseline,
                baseline_value=seconds(baseline),
                ratio=ratio(label, baseline),
                target=target,
            )
    if "matvec_fixed" not in impls:
        rec.skip(sec, f"{name}:fixed point", "Hessian.fixed_point is not in this version")
    else:
        _interleaved_fixed_point(rec, sec, name, side, settings)
    rec.detail(
        sec,
        name,
        {
            "samples": case.samples,
            "flops": flops,
            "gflops": rates,
            "best_gemm": best,
            "numbers": numbers,
            "rounds": rounds,
        },
    )


def _interleaved_fixed_point(rec, sec, name, side, settings):
    """The fixed-point matvec ÷ the gradient, their calls interleaved one by one.

    The rounds above time back-to-back calls of one function, where the
    gradient finds its few arrays in the caches after its own last call;
    here each call follows another function's, as a product follows NumPy
    work in an algorithm. For information: the target is on the rows above.
    """
    matvec = side.metric("matvec_fixed")["tfhess_linop"].call
    with side.fixed_point():
        times = timing.interleaved_calls(
            {"gradient": side.gradient, "matvec_fixed": matvec},
            rounds=max(40, 25 * settings.repeats),
        )
    rec.row(
        sec,
        name,
        "matvec at a fixed point, calls interleaved one by one",
        times["matvec_fixed"]["median"],
        "s",
        baseline="gradient",
        baseline_value=times["gradient"]["median"],
        ratio=times["matvec_fixed"]["ratio"],
        note="median of per-round ratios; each call after another function's",
    )
