"""Randomized SVD: subspace against block Krylov
=============================================

Randomized SVD of a network's Hessian: subspace against block Krylov iteration.

The seed's ``RandMatSVD(k, p, Krylov=q)`` built a block Krylov space and then
used only its first block. Here both ways of refining the randomized range
finder (`tfhess_linop.randomized_svd`, ``method="subspace"`` and
``method="krylov"``) are run on the Hessian of a small MLP regression loss,
for 0 to 4 iterations, and their singular values compared with
:func:`numpy.linalg.svd` of the dense Hessian. Both cost
``(n_iter + 2)(k + oversample)`` Hessian-vector products, made as batched
products (one ``matmat`` per block); at equal cost block Krylov is at least
as accurate. The SVD is also checked to reconstruct the dense Hessian's best
rank-k approximation, and `svds` (Lanczos) is checked to be exact.

The figure ``<out>/randomized_svd.png`` shows the error against the number
of products, and the singular values found.

Run: ``python examples/randomized_svd.py [--out DIR]``.
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

import tfhess_linop as thl

QUICK = os.environ.get("CI", "").lower() == "true"


def make_hessian(seed):
    """The Hessian of a tanh MLP's mean squared error on a smooth regression problem."""
    features, hidden, samples = (6, 16, 200) if QUICK else (10, 32, 500)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features))
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((features,), dtype="float64"),
            keras.layers.Dense(hidden, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=10, batch_size=50, verbose=0)
    return thl.Hessian.from_keras(model, "mse", x, y)


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(description="Randomized SVD: subspace against block Krylov")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %%
# The Hessian of a small MLP and its exact singular values.
H = make_hessian(args.seed)
dense = H.dense()
U_exact, exact, _ = np.linalg.svd(dense)
k, oversample = 8, 4
print(
    f"Hessian of a {H.n}-parameter MLP; top singular values "
    f"{np.array2string(exact[:k], precision=4)}"
)

# %%
# Subspace against block Krylov iteration for 0 to 4 iterations, at equal cost.
iterations = range(5)
repeats = 3 if QUICK else 10
errors = {"subspace": [], "krylov": []}
products = {"subspace": [], "krylov": []}
for method in errors:
    for n_iter in iterations:
        trial_errors = []
        for trial in range(repeats):
            A = thl.as_linop(H)
            U, s, Vt = thl.randomized_svd(
                A,
                k,
                oversample=oversample,
                n_iter=n_iter,
                method=method,
                rng=args.seed + trial,
            )
            assert s.shape == (k,) and np.all(np.diff(s) <= 0)
            trial_errors.append(np.max(np.abs(s - exact[:k]) / exact[0]))
        errors[method].append(float(np.median(trial_errors)))
        products[method].append(A.n_hvp)
    print(
        f"{method:>8}: n_iter 0..4, {products[method]} products, median max relative "
        f"error {', '.join(f'{e:.1e}' for e in errors[method])}"
    )

# At equal cost, block Krylov is at least as accurate (up to rounding).
assert products["krylov"] == products["subspace"]
for krylov, subspace in zip(errors["krylov"], errors["subspace"], strict=True):
    assert krylov <= subspace * 1.5 + 1e-12, (krylov, subspace)
assert errors["krylov"][-1] < 1e-4 < errors["krylov"][0] / 100
assert errors["subspace"][-1] < errors["subspace"][0] / 5

# %%
# The rank-k reconstruction is close to the best one (Eckart-Young).
U, s, Vt = thl.randomized_svd(
    thl.as_linop(H), k, oversample=oversample, n_iter=4, method="krylov", rng=args.seed
)
best = np.linalg.norm(dense - (U_exact[:, :k] * exact[:k]) @ U_exact[:, :k].T, 2)
ours = np.linalg.norm(dense - (U * s) @ Vt, 2)
assert best * (1 - 1e-10) <= ours <= best * 1.01, (ours, best)
print(f"rank-{k} reconstruction error {ours:.6e} (best possible {best:.6e})")
_, lanczos, _ = thl.svds(thl.as_linop(H), k=k)
np.testing.assert_allclose(lanczos[::-1], exact[:k], rtol=1e-8)
print("svds (Lanczos) agrees with numpy.linalg.svd to 1e-8")

# %%
# Error against the number of products, and the singular values found.
figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
for method, marker in (("subspace", "o-"), ("krylov", "s-")):
    left.semilogy(
        products[method], np.maximum(errors[method], 1e-17), marker, label=f"{method} iteration"
    )
    for n_iter, (x, y) in enumerate(zip(products[method], errors[method], strict=True)):
        if method == "krylov":
            left.annotate(
                f"q={n_iter}", (x, y), xytext=(4, -10), textcoords="offset points", fontsize=7
            )
left.set_xlabel("Hessian-vector products (batched)")
left.set_ylabel(f"max |s_j - σ_j| / σ_1, j ≤ {k} (median of {repeats})")
left.set_title(f"Randomized SVD, k = {k}, oversample {oversample}")
left.legend()
index = np.arange(1, 3 * k + 1)
right.semilogy(index, exact[: 3 * k], "o", color="0.6", label="numpy.linalg.svd")
right.semilogy(
    np.arange(1, k + 1), s, "x", color="C1", markersize=9, label="randomized (Krylov, q = 4)"
)
right.axvline(k + 0.5, color="0.7", linestyle=":")
right.set_xlabel("index j")
right.set_ylabel("singular value")
right.set_title(f"Singular values of the Hessian (n = {H.n})")
right.legend()
figure.tight_layout()
figure.savefig(out / "randomized_svd.png", dpi=110)
