"""One dense-Hessian measurement in a fresh process; prints one JSON line.

    python benchmarks/dense_worker.py CASE METHOD [METHOD ...] [--repeats R]
        [--samples N] [--block-size B]

METHOD is ``hessian`` (``Hessian.dense()``) or ``jacobian`` (the nested-tape
``GradientTape.jacobian`` baseline of ``cases.jacobian``); one line per method.

Peak memory is the growth of the process's resident-set high-water mark
(VmHWM in /proc/self/status) over the first call, measured after the model,
data, TensorFlow runtime and a compiled gradient already exist. TensorFlow's
allocator is invisible to tracemalloc; the RSS high-water mark sees every
page the call touched, including the (n, n) float64 result itself and the
tracing of the first call. The full benchmark runs one method per fresh
process. With several methods in one process (quick runs), the high-water
mark is reset between them by writing 5 to /proc/self/clear_refs (Linux
>= 4.0); where that fails, later methods' numbers are marked unreliable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cases
import timing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(cases.CASES))
    parser.add_argument("methods", nargs="+", choices=["hessian", "jacobian"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=None)
    args = parser.parse_args(argv)

    import tfhess_linop as thl

    case = cases.CASES[args.case]
    if args.samples:
        case = cases.with_samples(case, args.samples)
    model, loss, x, y = cases.build(case)
    gradient = cases.gradient(model, loss, x, y)
    gradient()  # TensorFlow runtime and thread pools up before the baseline
    for index, method in enumerate(args.methods):
        reliable = index == 0 or timing.reset_peak_rss()
        if method == "hessian":
            H = thl.Hessian.from_keras(model, loss, x, y)
            H.gradient()
            function = lambda H=H: H.dense(block_size=args.block_size)  # noqa: E731
        else:
            function = cases.jacobian(model, loss, x, y)
        before = timing.peak_rss_mib()
        result, cold = timing.timed(function)
        peak = timing.peak_rss_mib() - before
        n = result.shape[0]
        del result
        warm = [timing.timed(function)[1] for _ in range(args.repeats)]
        print(
            json.dumps(
                {
                    "case": args.case,
                    "method": method,
                    "block_size": args.block_size,
                    "n": int(n),
                    "samples": case.samples,
                    "cold_s": cold,
                    "warm_s": statistics.median(warm),
                    "warm_samples_s": warm,
                    "peak_rss_delta_mib": peak,
                    "rss_before_mib": before,
                    "result_mib": n * n * 8 / 2**20,
                    "fresh_process": index == 0,
                    "peak_rss_reliable": reliable,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
