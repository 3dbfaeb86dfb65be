"""The MPI section: 1 process against 2 ranks, alternated launches of `mpi_worker.py`."""

from __future__ import annotations

import os
import statistics
import sys

from harness import HERE, MPIEXEC, Job, Lazy


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
    make = Job if settings.quick else Lazy
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
