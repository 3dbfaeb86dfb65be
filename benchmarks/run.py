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
peers        side by side with curvlinops, PyHessian, hessian-eigenthings (PyTorch,
             in their own interpreter: --peers-python) — mlp_f32, mlp_large, conv
roofline     achieved GFLOP/s of gradient and products vs TF's best float32 GEMM;
             fixed-point and block products vs the gradient — mlp_f32, mlp_large
cli          tfhess-linop --help vs python -c "import numpy", fresh processes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import report  # noqa: E402
import timing  # noqa: E402
from bench_algorithms import bench_algorithms  # noqa: E402
from bench_dense import bench_dense, dense_jobs  # noqa: E402
from bench_estimators import bench_estimators  # noqa: E402
from bench_mpi import bench_mpi, mpi_available, mpi_jobs  # noqa: E402
from bench_operator import bench_operator  # noqa: E402
from bench_peers import PEERS_ENV, bench_peers  # noqa: E402
from bench_roofline import bench_roofline  # noqa: E402
from harness import TARGETS, Recorder, Settings, target_text  # noqa: E402
from startup import bench_cli  # noqa: E402

SECTIONS = {
    "operator": ["xor", "mlp_f32", "mlp_f64", "mlp_large", "conv"],
    "dense": ["dense_1k", "dense_5k"],
    "algorithms": ["mlp_f64"],
    "estimators": ["mlp_f64"],
    "mpi": ["mpi_mlp"],
    "peers": ["mlp_f32", "mlp_large", "conv"],
    "roofline": ["mlp_f32", "mlp_large"],
    "cli": ["help"],
}

RUNNERS = {
    "operator": bench_operator,
    "dense": bench_dense,
    "algorithms": bench_algorithms,
    "estimators": bench_estimators,
    "mpi": bench_mpi,
    "peers": bench_peers,
    "roofline": bench_roofline,
    "cli": bench_cli,
}


def plan(settings, only):
    items = []
    for section, names in SECTIONS.items():
        for name in names:
            if section == "dense" and name not in settings.dense_cases:
                continue
            if section == "roofline" and name not in settings.roofline_cases:
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
        help="timed rounds per measurement (default 2 quick, 9 full; peers 7)",
    )
    parser.add_argument(
        "--peers-python",
        metavar="PATH",
        default=os.environ.get(PEERS_ENV),
        help=f"the peers' interpreter (PyTorch, curvlinops, PyHessian, "
        f"hessian-eigenthings); default ${PEERS_ENV}; without it the peers are skipped",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only the sections/cases run in --out's existing results.json",
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


def _public_argv(argv):
    """The command line as recorded: the peers' interpreter path left out."""
    out = []
    for item in argv:
        if out and out[-1] == "--peers-python":
            item = "PATH"
        elif item.startswith("--peers-python="):
            item = "--peers-python=PATH"
        out.append(item)
    return out


def main(argv=None):
    args = parse_args(argv)
    settings = Settings(args.quick, args.repeats, args.peers_python)
    started = time.perf_counter()
    import tensorflow as tf

    meta = timing.machine_info()
    meta.update(
        {
            "mode": "quick" if args.quick else "full",
            "repeats": settings.repeats,
            "argv": _public_argv(sys.argv[1:] if argv is None else list(argv)),
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
        "targets": {k: target_text(k) for k in TARGETS},
        "results": rec.rows,
        "skipped": rec.skipped,
        "details": rec.details,
    }
    os.makedirs(args.out, exist_ok=True)
    if args.update:
        results = report.merge(os.path.join(args.out, "results.json"), results)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1, allow_nan=True)
    with open(os.path.join(args.out, "results.md"), "w") as handle:
        handle.write(report.markdown(results))
    print(f"\nwrote {args.out}/results.json and results.md in {meta['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
