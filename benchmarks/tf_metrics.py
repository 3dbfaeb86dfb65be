"""The tfhess_linop side of the peer and roofline sections: one function per metric.

Each metric is a dict of implementations, name -> ``Impl``: a zero-argument
call, how many products (columns) one call makes, an optional context
entered around a sample (a fixed point), and whether the call is an
algorithm whose time inside and outside the operator's products is split.
The peers' worker (`peer_worker.py`) builds the same metrics in PyTorch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import cases
import numpy as np
import timing

# Metrics in the order they are measured; "cheap" ones are timed over
# several back-to-back calls per sample, algorithms over one call.
METRICS = (
    "matvec",
    "matvec_fixed",
    "matmat32",
    "matmat32_fixed",
    "eigsh",
    "hutchpp",
)
ALGORITHMS = {"eigsh", "hutchpp"}
EIGSH_TOL = 1e-6
HUTCHPP_MATVECS = 99
BLOCK = 32


@dataclass
class Impl:
    """One implementation of a metric."""

    call: object
    columns: int = 1
    context: object = None
    clocked: object = None  # the operator whose products are timed, for algorithms


def probe_vectors(n, seed=7):
    """The direction v, the block V (n x 32) and the eigsh start v0, in the TF layout."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n), rng.standard_normal((n, BLOCK)), rng.standard_normal(n)


class TFSide:
    """The tfhess_linop operator and its yardstick gradient for one case."""

    def __init__(self, model, loss, x, y):
        import tfhess_linop as thl

        self.thl = thl
        self.H = thl.Hessian.from_keras(model, loss, x, y)
        self.A = thl.as_linop(self.H)
        # Plain products keep the passes of their point (`keep_passes`, the
        # default). They are timed on a Hessian of their own, whose kept
        # passes no fixed-point block of the other metrics drops (entering
        # one does), and products from scratch on another.
        self.keeps_passes = hasattr(self.H, "keep_passes")
        self.A_kept, self.A_scratch = self.A, self.A
        if self.keeps_passes:
            self.A_kept = thl.as_linop(thl.Hessian.from_keras(model, loss, x, y))
            scratch = thl.Hessian.from_keras(model, loss, x, y)
            scratch.keep_passes = False
            self.A_scratch = thl.as_linop(scratch)
        self.n = self.H.n
        self.gradient = cases.gradient(model, loss, x, y)
        self.v, self.V, self.v0 = probe_vectors(self.n)
        self.has_fixed_point = callable(getattr(self.H, "fixed_point", None))

    def fixed_point(self):
        """The Hessian's fixed-point context, or a no-op before it exists."""
        return self.H.fixed_point() if self.has_fixed_point else contextlib.nullcontext()

    def metric(self, name, seed=0):
        """name of the implementation -> Impl, for one metric (empty if not available)."""
        A, thl = self.A, self.thl
        if name == "matvec":
            return {"tfhess_linop": Impl(lambda: self.A_kept.matvec(self.v))}
        if name == "matvec_scratch":
            return {"tfhess_linop": Impl(lambda: self.A_scratch.matvec(self.v))}
        if name == "matmat32_scratch":
            return {"tfhess_linop": Impl(lambda: self.A_scratch.matmat(self.V), columns=BLOCK)}
        if name == "matvec_fixed":
            if not self.has_fixed_point:
                return {}
            return {"tfhess_linop": Impl(lambda: A.matvec(self.v), context=self.fixed_point)}
        if name == "matmat32":
            return {"tfhess_linop": Impl(lambda: self.A_kept.matmat(self.V), columns=BLOCK)}
        if name == "matmat32_fixed":
            if not self.has_fixed_point:
                return {}
            return {
                "tfhess_linop": Impl(
                    lambda: A.matmat(self.V), columns=BLOCK, context=self.fixed_point
                )
            }
        if name == "eigsh":
            return {
                "tfhess_linop": Impl(
                    lambda: float(thl.eigsh(A, k=1, which="LA", tol=EIGSH_TOL, v0=self.v0)[0][0]),
                    clocked=A,
                )
            }
        if name == "hutchpp":
            return {
                "tfhess_linop": Impl(
                    lambda: float(thl.hutchpp_trace(A, HUTCHPP_MATVECS, rng=seed)[0]),
                    clocked=A,
                )
            }
        raise ValueError(f"unknown metric {name!r}")

    def reference_eigenvalue(self):
        """lambda_1 for the 1e-6 check and the agreement, as tight as float32 products allow.

        The residual tolerance is the reachable 1e-6 (float32 rounding is
        ~1e-7 of |H|), with room to converge: the eigenvalue's error is about
        the residual's square over the gap.
        """
        result = self.thl.eigsh(self.A, k=1, which="LA", tol=1e-6, ncv=40, maxiter=1000, v0=self.v0)
        return float(result[0][0])


def measure(impl, number):
    """One sample of `impl`: seconds per column, and for algorithms the split and value."""
    if impl.clocked is None:
        return {"seconds": timing.sample(impl.call, number, impl.context) / impl.columns}
    split = {}
    value, products, seconds = timing.counted(impl.clocked, impl.call, split)
    return {
        "seconds": seconds,
        "in_products_s": split["in_hvp_s"],
        "products": products,
        "value": value,
    }


def numbers(impls, *, warmup, sample_time, algorithm):
    """Calls per sample of each implementation (1 for algorithms), after warm-up."""
    out = {}
    for label, impl in impls.items():
        if algorithm:
            for _ in range(max(warmup, 1)):
                impl.call()
            out[label] = 1
        else:
            out[label] = timing.calibrate(
                impl.call, warmup=warmup, sample_time=sample_time, context=impl.context
            )
    return out
