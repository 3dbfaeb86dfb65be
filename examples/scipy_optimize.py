"""Keras models trained by scipy.optimize.minimize
===============================================

Training Keras models with scipy.optimize.minimize, and shift-invert eigenvalues.

Three parts, each checked against an independent reference:

- a linear Keras regression trained by ``scipy.optimize.minimize(method=
  "trust-krylov")`` through `tfhess_linop.ScipyObjective`: the result equals
  the dense Newton solution (:func:`numpy.linalg.lstsq` on ``[x 1]``), and
  its loss equals Keras' own ``evaluate`` loss (float32 accuracy: Keras
  computes losses in floatx);
- a small Keras classifier (an MLP with a sigmoid output and binary
  cross-entropy) trained by trust-ncg, through `tfhess_linop.minimize`,
  which leaves the model at ``res.x``; its loss is compared with Keras' own
  ``fit`` (Adam) after many more passes over the data;
- the eigenvalues nearest 0 of the classifier's Hessian by shift-invert
  `tfhess_linop.eigsh` (MINRES inside), against :func:`numpy.linalg.eigvalsh`.

The figure ``<out>/scipy_optimize.png`` shows the loss per iteration of the
classifier (trust-ncg against Adam) and the Hessian's spectrum with the
shift-invert eigenvalues marked.

Run: ``python examples/scipy_optimize.py [--out DIR]``.
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
import scipy.optimize

import tfhess_linop as thl

QUICK = os.environ.get("CI", "").lower() == "true"


def regression():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3 + 0.1 * rng.standard_normal((200, 1))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")]
    )
    model.compile(loss="mse")
    H = thl.Hessian.from_keras(model, x=x, y=y, batch_size=64)
    objective = thl.ScipyObjective(H)
    res = scipy.optimize.minimize(
        objective.fun,
        H.parameters(),
        jac=objective.jac,
        hessp=objective.hessp,
        method="trust-krylov",
        # Exact subproblems: on an exactly quadratic loss SciPy's inexact
        # trlib steps can break down (NaN directions) once the gradient is
        # at round-off level.
        options={"gtol": 1e-9, "inexact": False},
    )
    H.set_parameters(res.x)  # SciPy leaves the variables at its last trial point
    newton = np.linalg.lstsq(np.hstack([x, np.ones((200, 1))]), y, rcond=None)[0][:, 0]
    error = np.abs(res.x - newton).max()
    keras_loss = model.evaluate(x, y, batch_size=200, verbose=0)
    print(
        f"regression: trust-krylov {res.nit} iterations, {objective.n_hvp} HVPs, "
        f"|w - lstsq| = {error:.1e}, loss {res.fun:.6e} (Keras evaluate {keras_loss:.6e})"
    )
    assert res.success and error < 1e-8
    assert abs(keras_loss - res.fun) <= 1e-6 * res.fun


def classifier_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(6, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, activation="sigmoid", dtype="float64"),
        ]
    )


def classification():
    rng = np.random.default_rng(1)
    n = 200
    x = rng.standard_normal((n, 2))
    y = ((x[:, :1] ** 2 + x[:, 1:] ** 2 > 1.0) ^ (rng.random((n, 1)) < 0.1)).astype("float64")
    model = classifier_model(2)
    model.compile(loss="binary_crossentropy")
    H = thl.Hessian.from_keras(model, x=x, y=y)
    losses = [H.loss_value()]
    # trust-ncg, not trust-krylov: trlib's inexact subproblems break down
    # on this saturating classifier (NaN directions), at some points and
    # not others, as round-off in the products changes.
    res = thl.minimize(
        H,
        method="trust-ncg",
        options={"gtol": 1e-6, "maxiter": 200},
        callback=lambda xk: losses.append(thl.ScipyObjective(H).fun(xk)),
    )
    assert np.array_equal(H.parameters(), res.x), "minimize leaves the model at res.x"
    gradient_norm = np.linalg.norm(H.gradient())
    print(
        f"classifier: trust-ncg {res.nit} iterations, {res.n_hvp} HVPs, "
        f"loss {res.fun:.5f}, |g| = {gradient_norm:.1e}"
    )

    adam_model = classifier_model(2)
    adam_model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    epochs = 150 if QUICK else 600
    history = adam_model.fit(x, y, batch_size=n, epochs=epochs, verbose=0)
    adam = history.history["loss"]
    print(f"classifier: Keras fit (Adam, {epochs} full-batch epochs) loss {adam[-1]:.5f}")
    assert res.fun <= adam[-1] + 1e-6, "the second-order run reaches a loss Adam does not beat"
    keras_loss = model.evaluate(x, y, batch_size=n, verbose=0)
    assert abs(keras_loss - res.fun) <= 1e-5 * res.fun
    return H, losses, adam


def spectrum(H):
    A = thl.as_linop(H)
    exact = np.linalg.eigvalsh(H.dense())
    sigma = 1e-4  # beside 0, which may be an eigenvalue
    values = np.sort(thl.eigsh(A, k=3, sigma=sigma, return_eigenvectors=False))
    nearest = np.sort(exact[np.argsort(np.abs(exact - sigma))[:3]])
    print(f"eigenvalues nearest 0: {values} ({A.n_hvp} HVPs), eigvalsh {nearest}")
    assert np.allclose(values, nearest, rtol=0, atol=1e-9 * np.abs(exact).max())
    return exact, values


# %%
# The command line: ``--out`` is the folder for the figures.

parser = argparse.ArgumentParser(description="Keras models trained by scipy.optimize.minimize")
parser.add_argument("--out", default="out", help="directory for the figure")
out = pathlib.Path(parser.parse_args().out)
out.mkdir(parents=True, exist_ok=True)

# %%
# A linear regression trained by trust-krylov, against ``lstsq``.
regression()

# %%
# A classifier trained by trust-ncg, against Keras' own ``fit``.
H, losses, adam = classification()

# %%
# Shift-invert eigenvalues nearest 0 against ``eigvalsh``.
exact, values = spectrum(H)

# %%
# Loss per iteration, and the spectrum with the shift-invert eigenvalues.
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
left.semilogy(np.arange(len(losses)), losses, "o-", label="trust-ncg (thl.minimize)")
left.semilogy(np.arange(1, len(adam) + 1), adam, label="Keras fit, Adam")
left.set_xlabel("iteration / epoch")
left.set_ylabel("binary cross-entropy")
left.set_xscale("log")
left.legend()
right.plot(exact, np.zeros_like(exact), "|", markersize=30, label="eigvalsh")
right.plot(values, np.zeros_like(values), "o", label="shift-invert eigsh, sigma≈0")
right.set_xscale("symlog", linthresh=1e-4)
right.set_yticks([])
right.set_xlabel("eigenvalue of the Hessian at the solution")
right.legend()
figure.tight_layout()
figure.savefig(out / "scipy_optimize.png", dpi=110)
