"""SciPy pipelines: shift-invert products, and the cost of a product at a new point.

Two measurements (issue 11), printed and written to ``<out>/scipy_pipelines.json``:

1. **Shift-invert eigsh.** On the Hessian of a 2-20-3 tanh MLP (123
   parameters, MSE on 64 samples), the Hessian-vector products of
   ``tfhess_linop.eigsh(A, k=3, sigma=s)`` (MINRES inverse) against
   ``scipy.sparse.linalg.eigsh`` with SciPy's default inverse of an operator
   (GMRES), for ``s`` = 0.1 and 0. SciPy's run takes ~1.5e5 products, so by
   default it runs on the same Hessian as a dense matrix wrapped in a
   counting operator (the same products, microseconds each);
   ``--real-hessian`` runs it on the Hessian operator itself (minutes).
   Target: at most 1/20 of SciPy's products.
2. **hessp at a new point.** ``ScipyObjective.hessp(w, p)`` with a new ``w``
   each call, divided by a ``Hessian.hvp(p)`` from scratch at the current
   point (checksum, assignment and product against the product alone), on a
   784-128-10 MLP with 512 samples (``--quick``: 64-32-10, 128 samples),
   timed interleaved (``timing.compare``). Target: at most 1.15.

Run: ``python benchmarks/scipy_pipelines.py [--quick] [--real-hessian] [--out DIR]``.
"""

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import scipy.sparse.linalg as sla

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import timing

import tfhess_linop as thl


class Counted(sla.LinearOperator):
    """A matrix as an operator without a matrix (SciPy then inverts by GMRES), counting."""

    def __init__(self, operator):
        self.operator = operator
        self.n_hvp = 0
        super().__init__(dtype=np.float64, shape=operator.shape)

    def _matvec(self, x):
        self.n_hvp += 1
        return self.operator @ x.reshape(-1)

    def _adjoint(self):
        return self


def mlp(sizes, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],), dtype="float64")]
    layers += [keras.layers.Dense(s, activation="tanh", dtype="float64") for s in sizes[1:-1]]
    layers.append(keras.layers.Dense(sizes[-1], dtype="float64"))
    return keras.Sequential(layers)


def shift_invert(real_hessian):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 2)), rng.standard_normal((64, 3))
    H = thl.Hessian.from_keras(mlp((2, 20, 3)), "mse", x, y)
    dense = H.dense()
    exact = np.linalg.eigvalsh(dense)
    rows = []
    for sigma in (0.1, 0.0):
        nearest = np.sort(exact[np.argsort(np.abs(exact - sigma))[:3]])
        A = thl.as_linop(H)
        ours = np.sort(thl.eigsh(A, k=3, sigma=sigma, return_eigenvectors=False))
        row = {
            "sigma": sigma,
            "n": H.n,
            "tfhess_linop_hvp": A.n_hvp,
            "tfhess_linop_error": float(np.abs(ours - nearest).max()),
        }
        reference = Counted(thl.as_linop(H) if real_hessian else dense)
        try:
            theirs = sla.eigsh(reference, k=3, sigma=sigma, v0=np.ones(H.n))[0]
            row["scipy_error"] = float(np.abs(np.sort(theirs) - nearest).max())
        except Exception as exc:  # SciPy's GMRES inverse fails for sigma = 0
            row["scipy_failure"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        row["scipy_hvp"] = reference.n_hvp
        row["ratio"] = row["tfhess_linop_hvp"] / row["scipy_hvp"]
        if "scipy_failure" in row:
            verdict = "SciPy failed"
        else:
            verdict = f"{'PASS' if row['ratio'] <= 0.05 else 'FAIL'} <= 1/20"
        scipy_outcome = row.get("scipy_failure") or f"error {row.get('scipy_error', 0.0):.1e}"
        print(
            f"shift-invert eigsh, sigma={sigma}: tfhess_linop {A.n_hvp} HVPs "
            f"(error {row['tfhess_linop_error']:.1e}), SciPy default {reference.n_hvp} HVPs "
            f"({scipy_outcome}); "
            f"ratio {row['ratio']:.3f} [{verdict}]"
        )
        rows.append(row)
    return rows


def hessp_at_new_points(quick, repeats):
    sizes, samples = ((64, 32, 10), 128) if quick else ((784, 128, 10), 512)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((samples, sizes[0])), rng.standard_normal((samples, sizes[-1]))
    model = mlp(sizes)
    H = thl.Hessian.from_keras(model, "mse", x, y)
    objective = thl.ScipyObjective(H)
    # The baseline computes each product from scratch, as one at a new
    # point must (a Hessian keeps the passes of its point between plain
    # products: `keep_passes`, the default).
    scratch = thl.Hessian.from_keras(model, "mse", x, y)
    if hasattr(scratch, "keep_passes"):
        scratch.keep_passes = False
    p = rng.standard_normal(H.n)
    base = H.parameters()
    points = [base + 1e-3 * rng.standard_normal(H.n) for _ in range(2)]
    state = {"i": 0}

    def new_point():
        state["i"] ^= 1
        objective.hessp(points[state["i"]], p)

    times = timing.compare(
        {"hvp": lambda: scratch.hvp(p), "hessp at a new w": new_point}, repeats=repeats
    )
    ratio = timing.paired_ratio(times, "hessp at a new w", "hvp")
    print(
        f"hessp(w, p) at a new w / hvp(p), n = {H.n}: {ratio:.3f} "
        f"[{'PASS' if ratio <= 1.15 else 'FAIL'} <= 1.15] "
        f"(hvp {times['hvp']['median'] * 1e3:.2f} ms)"
    )
    return {"n": H.n, "ratio": ratio, "hvp_ms": times["hvp"]["median"] * 1e3}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, 2 rounds")
    parser.add_argument("--real-hessian", action="store_true", help="SciPy on the real operator")
    parser.add_argument("--out", default="out", help="directory for the JSON results")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "shift_invert": shift_invert(args.real_hessian),
        "hessp_new_point": hessp_at_new_points(args.quick, 2 if args.quick else 9),
    }
    (out / "scipy_pipelines.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
