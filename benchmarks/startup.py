"""Start-up time of the ``tfhess-linop`` command (issue #12), in fresh processes.

``--help`` must answer without importing TensorFlow. Its time is compared,
interleaved round by round, with the cheapest comparable Python process,
``python -c "import numpy"`` (the package imports NumPy at start-up).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time

NUMPY = [sys.executable, "-c", "import numpy"]


def commands():
    """The commands timed: name -> argv (the console script when installed)."""
    script = os.path.join(os.path.dirname(sys.executable), "tfhess-linop")
    timed = {"python -c 'import numpy'": NUMPY}
    timed["python -m tfhess_linop --help"] = [sys.executable, "-m", "tfhess_linop", "--help"]
    if os.path.exists(script):
        timed["tfhess-linop --help"] = [script, "--help"]
    return timed


def _elapsed(argv):
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats, seed=0):
    """Wall time of each command over `repeats` shuffled rounds, after one warm-up each.

    Returns
    -------
    dict
        name -> {"median", "min", "samples", "ratio": median over rounds of
        the time / the NumPy import's time in the same round}
    """
    timed = commands()
    for argv in timed.values():
        _elapsed(argv)  # page cache, .pyc files
    samples = {name: [] for name in timed}
    order = list(timed)
    shuffler = random.Random(seed)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            samples[name].append(_elapsed(timed[name]))
    baseline = samples["python -c 'import numpy'"]
    return {
        name: {
            "median": statistics.median(times),
            "min": min(times),
            "samples": times,
            "ratio": statistics.median(t / b for t, b in zip(times, baseline, strict=True)),
        }
        for name, times in samples.items()
    }


def bench_cli(name, settings, rec):
    sec = "cli"
    times = measure(repeats=max(settings.repeats, 5))
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
