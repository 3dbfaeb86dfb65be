"""CG, MINRES and negative curvature
=================================

CG, MINRES and Nyström-preconditioned CG on an indefinite Hessian.

The Hessian of a small MLP classifier at its random initialisation is
indefinite. On the Newton system ``H x = -g``:

- `tfhess_linop.cg` stops at the first direction of non-positive curvature
  (Steihaug) and returns it as a certificate: its Rayleigh quotient is checked
  against the dense Hessian and against the smallest eigenvalue from
  :func:`numpy.linalg.eigvalsh`;
- `tfhess_linop.minres` solves the indefinite (and singular: softmax is
  invariant under a common shift of the logits) system, to its minimum-norm
  solution from :func:`numpy.linalg.lstsq`, recording the same certificate
  on the way;
- `tfhess_linop.pcg` (CG with a randomized Nyström preconditioner) also stops
  on negative curvature.

Where the preconditioner pays off, on a damped positive definite Hessian
with a few outlying eigenvalues (a linear least-squares model on
low-rank-plus-noise features, whose Hessian ``2/N [x 1]ᵀ[x 1]`` is known
exactly), CG and PCG converge to the solution of ``numpy.linalg.solve``, PCG
in less than half the iterations.

The figure ``<out>/solvers_negative_curvature.png`` shows the residual
histories of both systems.

Run: ``python examples/solvers_negative_curvature.py [--out DIR]``.
"""

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.sparse.linalg import LinearOperator

import tfhess_linop as thl

QUICK = os.environ.get("CI", "").lower() == "true"


def make_hessian(seed):
    """The Hessian of an untrained tanh MLP's cross-entropy on clustered data."""
    classes, features, hidden, samples = (3, 6, 12, 150) if QUICK else (4, 10, 24, 400)
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, features))
    y = rng.integers(classes, size=samples)
    x = centres[y] + rng.standard_normal((samples, features))
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((features,), dtype="float64"),
            keras.layers.Dense(hidden, activation="tanh", dtype="float64"),
            keras.layers.Dense(classes, dtype="float64"),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return thl.Hessian.from_keras(model, loss, x, y)


def least_squares_hessian(seed):
    """The Hessian of a linear model's MSE on low-rank-plus-noise features, and [x 1]."""
    features, samples, latent = (40, 200, 8) if QUICK else (150, 600, 8)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((samples, latent)) @ rng.standard_normal((latent, features))
    x += 0.05 * rng.standard_normal((samples, features))
    y = x @ rng.standard_normal((features, 1)) + 0.1 * rng.standard_normal((samples, 1))
    model = keras.Sequential(
        [keras.Input((features,), dtype="float64"), keras.layers.Dense(1, dtype="float64")]
    )
    return thl.Hessian.from_keras(model, "mse", x, y), np.hstack([x, np.ones((samples, 1))])


def shifted(A, sigma):
    """The operator ``A + sigma I``."""
    return LinearOperator(
        A.shape,
        matvec=lambda v: A @ v + sigma * v,
        matmat=lambda V: A @ V + sigma * V,
        dtype=np.float64,
    )


def solve_with_history(solver, A, b, dense, **options):
    """Run `solver`, recording the true relative residual after every iteration."""
    history = [1.0]

    def record(x):
        history.append(np.linalg.norm(b - dense @ x) / np.linalg.norm(b))

    return solver(A, b, callback=record, **options), history


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(description="CG, MINRES and negative curvature")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %%
# An untrained classifier: its Hessian is indefinite.
H = make_hessian(args.seed)
A = thl.as_linop(H)
dense = H.dense()
eigenvalues = np.linalg.eigvalsh(dense)
b = -H.gradient()
print(
    f"Hessian of an untrained {H.n}-parameter MLP: eigenvalues in "
    f"[{eigenvalues[0]:.4g}, {eigenvalues[-1]:.4g}]"
)
assert eigenvalues[0] < 0 < eigenvalues[-1], "the example needs an indefinite Hessian"

# %%
# CG, MINRES and PCG on the Newton system ``H x = -g``: each reports the direction
# of negative curvature it met, checked against the dense Hessian.
histories, stops = {}, {}
rank = 10
indefinite = {
    "CG": (thl.cg, {}),
    "MINRES": (thl.minres, {"maxiter": 20 * H.n}),
    f"PCG (Nyström rank {rank})": (thl.pcg, {"rank": rank, "rng": args.seed}),
}
print("\nH x = -g (indefinite):")
for name, (solver, options) in indefinite.items():
    A.n_hvp = 0
    result, history = solve_with_history(solver, A, b, dense, rtol=1e-10, **options)
    histories[f"{name}, H"] = history
    certificate = result.negative_curvature
    stops[name] = certificate.iteration if certificate is not None else None
    assert certificate is not None, f"{name} found no negative curvature"
    d = certificate.direction
    rayleigh = d @ dense @ d / (d @ d)
    np.testing.assert_allclose(certificate.curvature, rayleigh, rtol=1e-8, atol=1e-12)
    assert eigenvalues[0] - 1e-10 <= certificate.curvature <= 0.0
    status = "stopped" if result.info == -2 else f"info {result.info}"
    print(
        f"  {name:<22} {status}; negative curvature at iteration {certificate.iteration}: "
        f"d'Hd/|d|^2 = {certificate.curvature:.4g} (dense {rayleigh:.4g}, "
        f"lambda_min {eigenvalues[0]:.4g}); {A.n_hvp} products"
    )
    if solver is thl.minres:
        # Softmax is invariant under adding a constant to all logits, so H
        # is singular; g is orthogonal to that null space, so the system is
        # consistent, and MINRES from zero finds its minimum-norm solution.
        assert result.info == 0
        exact = np.linalg.lstsq(dense, b, rcond=1e-10)[0]
        error = np.linalg.norm(result.x - exact) / np.linalg.norm(exact)
        residual = np.linalg.norm(b - dense @ result.x) / np.linalg.norm(b)
        print(
            f"  {'':<22} MINRES: |b - Hx|/|b| = {residual:.1e}; minimum-norm solution "
            f"(numpy.linalg.lstsq) to {error:.1e}"
        )
        assert residual < 1e-8 and error < 1e-5
    else:
        assert result.info == -2

# %%
# Where the preconditioner pays off: a damped, positive definite Hessian
# with a few outlying eigenvalues (least squares on features of rank 8
# plus noise), whose Hessian 2/N [x 1]^T [x 1] is known exactly.
L, x1 = least_squares_hessian(args.seed)
reference = 2.0 * x1.T @ x1 / x1.shape[0]
np.testing.assert_allclose(L.dense(), reference, rtol=1e-12, atol=1e-12 * np.abs(reference).max())
top = np.linalg.eigvalsh(reference)[-1]
damping = 1e-4 * top
B = thl.as_linop(L)
S = shifted(B, damping)
damped = reference + damping * np.eye(L.n)
rhs = np.random.default_rng(args.seed).standard_normal(L.n)
exact = np.linalg.solve(damped, rhs)
print(
    f"\nleast squares, (H + {damping:.3g} I) x = b with H = 2/N [x 1]^T[x 1] "
    f"(n = {L.n}, condition {np.linalg.cond(damped):.3g}):"
)
iterations = {}
for name, solver, options in (
    ("CG", thl.cg, {}),
    (f"PCG (Nyström rank {rank})", thl.pcg, {"rank": rank, "rng": args.seed}),
):
    B.n_hvp = 0
    result, history = solve_with_history(solver, S, rhs, damped, rtol=1e-10, **options)
    histories[f"{name}, damped least squares"] = history
    error = np.linalg.norm(result.x - exact) / np.linalg.norm(exact)
    assert result.info == 0 and result.negative_curvature is None
    assert error < 1e-6, error
    iterations[name] = result.n_iter
    print(
        f"  {name:<22} {result.n_iter} iterations, {B.n_hvp} products; "
        f"= numpy.linalg.solve to {error:.1e}"
    )
assert iterations[f"PCG (Nyström rank {rank})"] < iterations["CG"] / 2

# %%
# Residual histories: the stars mark where negative curvature was found.
figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
for index, name in enumerate(indefinite):
    history = histories[f"{name}, H"]
    left.semilogy(range(len(history)), history, "-", color=f"C{index}", label=name)
    at = stops[name]
    left.plot(
        at,
        history[min(at, len(history) - 1)],
        "*",
        color=f"C{index}",
        markersize=14,
        markeredgecolor="k",
    )
left.plot(
    [],
    [],
    "*",
    color="0.8",
    markeredgecolor="k",
    markersize=12,
    label="negative curvature found",
)
left.set_xscale("symlog", linthresh=10)
left.set_xlabel("iteration (symmetric log scale)")
left.set_ylabel("|b - H x| / |b|   (dense H)")
left.set_title(f"H x = -g, H indefinite (λ_min = {eigenvalues[0]:.3g}, n = {H.n})")
left.legend(fontsize=8)
for index, name in enumerate(iterations):
    history = histories[f"{name}, damped least squares"]
    right.semilogy(
        range(len(history)),
        history,
        "o-",
        markersize=3,
        color=f"C{index + 3}",
        label=f"{name}: {iterations[name]} iterations",
    )
right.set_xlabel("iteration")
right.set_ylabel("|b - A x| / |b|   (dense A)")
right.set_title(f"(H + μI) x = b, damped least squares (condition {np.linalg.cond(damped):.2g})")
right.legend(fontsize=8)
figure.tight_layout()
figure.savefig(out / "solvers_negative_curvature.png", dpi=110)
