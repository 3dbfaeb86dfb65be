"""Timing, memory and machine-information helpers (no TensorFlow at import)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import random
import resource
import statistics
import time
import warnings


def compare(functions, *, repeats, warmup=2, sample_time=0.02, seed=0):
    """Time several zero-argument functions against each other, interleaved.

    Each function is first called `warmup` times (tracing, caches). Then, in
    each of `repeats` rounds, every function is timed once, in a shuffled
    order, over ``number`` back-to-back calls, where ``number`` makes a
    sample last about `sample_time` seconds. Interleaving puts the machine's
    load swings on all the functions alike, so their ratios are steadier
    than their times.

    Returns
    -------
    dict
        name -> {"median": seconds per call, "min", "max", "number",
        "samples": per-round seconds per call, in round order}
    """
    numbers = {}
    for name, function in functions.items():
        for _ in range(max(warmup, 1)):
            start = time.perf_counter()
            function()
            elapsed = time.perf_counter() - start
        numbers[name] = max(1, math.ceil(sample_time / max(elapsed, 1e-6)))
    samples = {name: [] for name in functions}
    order = list(functions)
    shuffler = random.Random(seed)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            function, number = functions[name], numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                function()
            samples[name].append((time.perf_counter() - start) / number)
    return {
        name: {
            "median": statistics.median(times),
            "min": min(times),
            "max": max(times),
            "number": numbers[name],
            "samples": times,
        }
        for name, times in samples.items()
    }


def paired_ratio(times, measure, baseline, scale=1.0):
    """Median over rounds of measure / (scale * baseline), each round paired.

    `times` is the output of `compare`. Pairing the two samples of the same
    round cancels the load swings between rounds, which the ratio of the two
    medians would not.
    """
    pairs = zip(times[measure]["samples"], times[baseline]["samples"], strict=True)
    return statistics.median(a / (scale * b) for a, b in pairs)


def interleaved_calls(functions, *, rounds, warmup=3, seed=0):
    """Median over rounds of each function's single-call time ÷ the first's.

    Every round calls each function once, in a shuffled order, each call
    timed alone: no function runs twice in a row, so none finds the caches
    warm from its own previous call (as in an algorithm, where NumPy work
    comes between products). `compare` times back-to-back calls instead.

    Returns
    -------
    dict
        name -> {"median": seconds per call, "ratio": median of the
        per-round ratios to the first function}
    """
    names = list(functions)
    for function in functions.values():
        for _ in range(warmup):
            function()
    samples = {name: [] for name in names}
    shuffler = random.Random(seed)
    order = list(names)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            start = time.perf_counter()
            functions[name]()
            samples[name].append(time.perf_counter() - start)
    first = samples[names[0]]
    return {
        name: {
            "median": statistics.median(times),
            "ratio": statistics.median(a / b for a, b in zip(times, first, strict=True)),
        }
        for name, times in samples.items()
    }


def timed(function):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def peak_rss_mib():
    """This process's resident-set high-water mark (VmHWM), in MiB.

    Falls back to ``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss():
    """Reset this process's VmHWM to its current RSS; True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def machine_info():
    """CPU, cores, memory, OS, Python and package versions, date (UTC)."""
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as meminfo:
            total_kib = int(meminfo.readline().split()[1])
            info["memory_gib"] = round(total_kib / 2**20, 1)
    except OSError:
        pass
    try:
        info["affinity_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    versions = {}
    for module in ("tensorflow", "keras", "numpy", "scipy", "mpi4py", "tfhess_linop"):
        try:
            versions[module] = __import__(module).__version__
        except Exception as exc:  # a missing optional package is information, not an error
            versions[module] = f"unavailable ({type(exc).__name__})"
    info["versions"] = versions
    try:
        from mpi4py import MPI

        info["mpi_library"] = MPI.Get_library_version().strip().splitlines()[0]
    except Exception:
        pass
    return info


class OperatorClock:
    """Accumulates the time spent inside an operator's products, and counts them.

    The methods `names` of `target` (an operator instance or a module) are
    shadowed by timed wrappers; for a SciPy `LinearOperator`, the public
    ``matvec``/``matmat`` call ``_matvec``/``_matmat``, so every product is
    seen. ``columns(*args)`` says how many products a call makes.
    """

    def __init__(self, target, names=("_matvec", "_matmat"), columns=None):
        self.seconds = 0.0
        self.products = 0
        self._columns = columns or _columns
        # The package's estimators call `_matmat_into` (products written into
        # their own block) on a `HessianOperator`: timed too, where it exists.
        optional = ("_matmat_into",) if hasattr(target, "_matmat_into") else ()
        for name in (*names, *optional):
            setattr(target, name, self._timed(getattr(target, name)))

    def _timed(self, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.products += self._columns(*args)

        return timed


def _columns(X, *_):
    shape = getattr(X, "shape", ())
    return int(shape[1]) if len(shape) == 2 else 1


_CLOCKS = {}


def counted(A, function, timings=None):
    """(result, HVPs, seconds) of `function()`, counting A's products.

    HVPs are ``A.n_hvp`` where A has that counter (`HessianOperator`), else
    the clock's count of columns through ``_matvec``/``_matmat``. With a
    `timings` dict, also stores there the seconds spent inside A's
    products ("in_hvp_s") and outside them ("outside_hvp_s").
    """
    clock = _CLOCKS.get(id(A)) or _CLOCKS.setdefault(id(A), OperatorClock(A))
    products, inside = clock.products, clock.seconds
    if hasattr(A, "n_hvp"):
        A.n_hvp = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = function()
    seconds = time.perf_counter() - start
    if timings is not None:
        timings["in_hvp_s"] = clock.seconds - inside
        timings["outside_hvp_s"] = seconds - timings["in_hvp_s"]
    hvps = A.n_hvp if hasattr(A, "n_hvp") else clock.products - products
    return result, hvps, seconds


def sample(function, number, context=None):
    """Seconds per call of `function` over `number` back-to-back calls.

    With a `context` (a context-manager factory), the calls run inside one
    ``with context():`` block, after one untimed call: the time per product
    at a fixed point, once its first product has paid the primal passes.
    """
    if context is None:
        start = time.perf_counter()
        for _ in range(number):
            function()
        return (time.perf_counter() - start) / number
    with context():
        function()
        start = time.perf_counter()
        for _ in range(number):
            function()
        return (time.perf_counter() - start) / number


def calibrate(function, *, warmup, sample_time, context=None):
    """Calls per sample so that a sample lasts about `sample_time`, timed after warm-up.

    The call that sets the number is one more after the `warmup` calls: a
    warm-up call may still trace or build (the first products of a
    `Hessian` trace the product and then its second pass), and a sample
    of one call would make that metric's samples one cold call each.
    """
    for _ in range(max(warmup, 1)):
        sample(function, 1, context)
    elapsed = sample(function, 1, context)
    return max(1, math.ceil(sample_time / max(elapsed, 1e-6)))
