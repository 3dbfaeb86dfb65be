"""Taylor test of the seed's cubic loss
====================================

Taylor test and eigenvalues of the seed's cubic loss, checked against the formulas.

The loss :math:`L(x, y) = 2x^3y^3` has the gradient
:math:`(6x^2y^3, 6x^3y^2)` and the Hessian
:math:`\\begin{bmatrix}12xy^3 & 18x^2y^2\\\\ 18x^2y^2 & 12x^3y\\end{bmatrix}`.
At (1, 1) and at random points this script checks:

- the gradient, Hessian-vector products and dense Hessian against the formulas;
- the second-order Taylor remainder
  :math:`|L(w + hv) - L(w) - h g^Tv - \\tfrac12 h^2 v^THv| = O(h^3)`
  (`tfhess_linop.taylor_test`), in float64 and float32: the float32 curve
  stops falling at the rounding level of the loss;
- the extreme eigenvalues by power iteration (the seed's "pi-max", plus the
  smallest) against :func:`numpy.linalg.eigvalsh` of the formula.

The figure ``<out>/cubic_taylor.png`` shows the remainders against h.

Run: ``python examples/cubic_taylor.py [--out DIR]``.
"""

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import tfhess_linop as thl

QUICK = os.environ.get("CI", "").lower() == "true"


def cubic(w):
    return 2 * w[0] ** 3 * w[1] ** 3


def exact_gradient(x, y):
    return np.array([6 * x**2 * y**3, 6 * x**3 * y**2])


def exact_hessian(x, y):
    return np.array([[12 * x * y**3, 18 * x**2 * y**2], [18 * x**2 * y**2, 12 * x**3 * y]])


def check_point(point, rng):
    """Check gradient, Hessian and eigenvalues at `point` (float64); return the Taylor test."""
    w = tf.Variable(point, dtype=tf.float64)
    H = thl.Hessian(cubic, w)
    A = thl.as_linop(H)
    hessian = exact_hessian(*point)
    np.testing.assert_allclose(H.gradient(), exact_gradient(*point), rtol=1e-13)
    v = rng.standard_normal(2)
    np.testing.assert_allclose(A @ v, hessian @ v, rtol=1e-12, atol=1e-12 * np.abs(hessian).max())
    np.testing.assert_allclose(H.dense(), hessian, rtol=1e-13)
    eigenvalues = np.linalg.eigvalsh(hessian)
    largest, _, info_max = thl.power_iteration(A, "LA", tol=1e-12, rng=rng)
    smallest, _, info_min = thl.power_iteration(A, "SA", tol=1e-12, rng=rng)
    assert info_max == info_min == 0
    np.testing.assert_allclose([largest, smallest], eigenvalues[::-1], rtol=1e-9)
    direction = rng.standard_normal(2)
    result = thl.taylor_test(H, direction / np.linalg.norm(direction))
    assert abs(result.order - 3) < 0.15, result.order
    print(
        f"  ({point[0]:+.3f}, {point[1]:+.3f}): eigenvalues {largest:+.6f}, {smallest:+.6f} "
        f"(eigvalsh {eigenvalues[1]:+.6f}, {eigenvalues[0]:+.6f}); Taylor order "
        f"{result.order:.3f}"
    )
    return result


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(description="Taylor test of the seed's cubic loss")
parser.add_argument("--out", default="out", help="directory for the figure")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(args.seed)

# %%
# Float64 at (1, 1) and at random points: gradient, products and the dense Hessian
# against the formulas, power iteration against ``eigvalsh``, and the Taylor test.
print("L(x, y) = 2 x^3 y^3: exact Hessian at (1, 1) is [[12, 18], [18, 12]], eigenvalues 30, -6")
points = [np.array([1.0, 1.0])] + [rng.uniform(0.5, 1.5, 2) for _ in range(2 if QUICK else 5)]
results = [check_point(point, rng) for point in points]

# %%
# The seed's float32 variables: the remainder stops falling at the
# loss's rounding level (about 1e-7 relative), so the order is measured
# on the larger steps only.
w32 = tf.Variable([1.0, 1.0], dtype=tf.float32)
H32 = thl.Hessian(cubic, w32)
steps = 2.0 ** -np.arange(0, 14)
float32 = thl.taylor_test(H32, np.array([1.0, 1.0]) / np.sqrt(2), steps=steps)
assert abs(float32.order - 3) < 0.3, float32.order
print(f"  float32 at (1, 1): Taylor order {float32.order:.3f} (over the steps above rounding)")
np.testing.assert_allclose(H32.dense(), exact_hessian(1.0, 1.0), rtol=1e-6)

# %%
# The remainders against the step: slope 3 in float64; float32 flattens at its
# rounding level.
figure, ax = plt.subplots(figsize=(6.5, 4.5))
for index, (point, result) in enumerate(zip(points, results, strict=True)):
    ax.loglog(
        result.steps,
        result.errors,
        "o-",
        markersize=4,
        color=f"C{index}",
        label=f"float64 at ({point[0]:.2f}, {point[1]:.2f}): order {result.order:.2f}",
    )
ax.loglog(
    float32.steps,
    float32.errors,
    "s--",
    color="k",
    markersize=4,
    label="float32 at (1, 1): rounding floor ~1e-7 × L",
)
reference = results[0].errors[0] * (results[0].steps / results[0].steps[0]) ** 3
ax.loglog(results[0].steps, reference, ":", color="0.5", label="slope 3")
ax.set_xlabel("step h")
ax.set_ylabel("|L(w+hv) - L(w) - h gᵀv - ½h² vᵀHv|")
ax.set_title("Second-order Taylor remainder of 2x³y³")
ax.legend(fontsize=7)
figure.tight_layout()
figure.savefig(out / "cubic_taylor.png", dpi=110)
