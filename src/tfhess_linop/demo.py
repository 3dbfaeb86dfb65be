"""The walkthrough behind ``tfhess-linop demo``.

The seed notebook's story on small embedded problems, each result checked
against a dense or analytic reference:

1. the cubic loss :math:`2x^3y^3`: Taylor test and the eigenvalues 30 and -6;
2. the XOR network: its dense Hessian and spectrum, Lanczos against
   :func:`numpy.linalg.eigvalsh`;
3. randomized SVD (range finder, subspace and block Krylov iteration)
   against :func:`numpy.linalg.svd` on a small MLP's Hessian;
4. CG, MINRES and Nyström-preconditioned CG on that indefinite Hessian, with
   CG's negative-curvature certificate;
5. Newton-CG training of XOR against first-order SGD;
6. the spectral density of the MLP's Hessian by stochastic Lanczos
   quadrature, against its exact eigenvalues, and its trace by Hutch++.

It prints a summary, writes the figures as PNG files and ``summary.json``,
and returns the summary as a dict.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

__all__ = ["run_demo"]

_XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
_XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def run_demo(out="tfhess-linop-demo", *, quiet=False, seed=0):
    """Run the walkthrough, print its summary and write its figures.

    Parameters
    ----------
    out : str or path, optional
        Folder for the PNG figures and ``summary.json`` (created if needed).
    quiet : bool, optional
        No progress bars.
    seed : int, optional
        Seed of the models' initial weights and of the random vectors.

    Returns
    -------
    dict
        The numbers of the summary (also written to ``summary.json``).

    Examples
    --------
    >>> from tfhess_linop.demo import run_demo
    >>> summary = run_demo("demo-figures", quiet=True)  # doctest: +SKIP
    >>> round(summary["cubic"]["taylor_order"])  # doctest: +SKIP
    3
    """
    # An unusable folder fails here, before TensorFlow's start-up and any work.
    os.makedirs(out, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    print(f"tfhess-linop demo (TensorFlow {tf.__version__}, Keras {keras.__version__})")
    summary = {}
    figures = []
    summary["cubic"] = _cubic(out, figures, seed)
    summary["xor"] = _xor_hessian(out, figures)
    mlp = _mlp_hessian(seed)
    summary["randomized_svd"] = _randomized_svd(mlp, out, figures, seed)
    summary["solvers"] = _solvers(mlp, out, figures, seed)
    summary["training"] = _training(out, figures, quiet, seed)
    summary["density"] = _density(mlp, out, figures, seed)
    summary["figures"] = figures
    summary["seconds"] = time.perf_counter() - started
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(f"\nfigures: {', '.join(figures)} in {os.path.abspath(out)}")
    print(f"finished in {summary['seconds']:.1f} s")
    return summary


def _save(figure, out, name, figures):
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(os.path.join(out, name), dpi=110)
    plt.close(figure)
    figures.append(name)


# ----------------------------------------------------------------- 1. cubic


def _cubic(out, figures, seed):
    import matplotlib.pyplot as plt
    import tensorflow as tf

    from . import Hessian, as_linop, power_iteration, taylor_test

    print("\n1. Cubic loss L(x, y) = 2 x^3 y^3 at (1, 1); exact Hessian [[12, 18], [18, 12]]")
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    H = Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
    taylor = taylor_test(H, np.array([1.0, 1.0]) / np.sqrt(2.0))
    largest, _, _ = power_iteration(as_linop(H), "LA", tol=1e-10, rng=seed)
    smallest, _, _ = power_iteration(as_linop(H), "SA", tol=1e-10, rng=seed)
    dense_error = float(np.abs(H.dense() - [[12.0, 18.0], [18.0, 12.0]]).max())
    print(f"   Taylor remainder order      {taylor.order:.3f}  (expected 3)")
    print(f"   power iteration eigenvalues {largest:.8f}, {smallest:.8f}  (exact 30, -6)")
    print(f"   dense Hessian error         {dense_error:.1e}")

    figure, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(taylor.steps, taylor.errors, "o-", label="|L(w+hv) - quadratic model|")
    reference = taylor.errors[0] * (taylor.steps / taylor.steps[0]) ** 3
    ax.loglog(taylor.steps, reference, "--", color="0.5", label="slope 3")
    ax.set_xlabel("step h")
    ax.set_ylabel("second-order Taylor remainder")
    ax.set_title(f"Taylor test of 2x³y³: observed order {taylor.order:.2f}")
    ax.legend()
    _save(figure, out, "taylor.png", figures)
    return {
        "taylor_order": float(taylor.order),
        "eigenvalues": [float(largest), float(smallest)],
        "dense_error": dense_error,
    }


# ------------------------------------------------------------------- 2. XOR


def _xor_model():
    import keras

    model = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(2, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    return model


def _xor_hessian(out, figures):
    import matplotlib.pyplot as plt

    from . import Hessian, as_linop, eigsh

    print("\n2. XOR network 2-2-1 (tanh), mean squared error on the 4 XOR points")
    model = _xor_model()
    H = Hessian.from_keras(model, "mse", _XOR_X, _XOR_Y)
    dense = H.dense()
    exact = np.linalg.eigvalsh(dense)
    A = as_linop(H)
    top = eigsh(A, k=2, which="LA", return_eigenvectors=False)
    bottom = eigsh(A, k=2, which="SA", return_eigenvectors=False)
    lanczos_error = float(
        max(np.abs(np.sort(top) - exact[-2:]).max(), np.abs(np.sort(bottom) - exact[:2]).max())
    )
    print(f"   {H.n} parameters; loss {H.loss_value():.4f}")
    print(f"   eigenvalues (numpy.linalg.eigvalsh): {np.array2string(exact, precision=4)}")
    print(
        f"   Lanczos, 2 at each end: {A.n_hvp} Hessian-vector products, "
        f"max error {lanczos_error:.1e}"
    )

    names = [f"{name}[{i}]" for name, size in _parameter_blocks(model) for i in range(size)]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.25, 1]}
    )
    limit = np.abs(dense).max()
    image = left.imshow(dense, cmap="RdBu_r", vmin=-limit, vmax=limit)
    left.set_xticks(range(H.n), names, rotation=90, fontsize=7)
    left.set_yticks(range(H.n), names, fontsize=7)
    left.set_title("XOR Hessian (diverging colours, 0 = white)")
    figure.colorbar(image, ax=left, shrink=0.85)
    right.axhline(0.0, color="0.6", linewidth=0.8)
    right.plot(range(1, H.n + 1), exact, "o", label="numpy.linalg.eigvalsh")
    lanczos = np.concatenate([np.sort(bottom), np.sort(top)])
    right.plot(
        [1, 2, H.n - 1, H.n], lanczos, "x", color="C3", markersize=9, label="Lanczos (eigsh)"
    )
    right.set_xlabel("index")
    right.set_ylabel("eigenvalue")
    right.set_title("Spectrum: indefinite")
    right.legend()
    _save(figure, out, "xor_hessian.png", figures)
    return {
        "n": H.n,
        "eigenvalues": exact.tolist(),
        "lanczos_error": lanczos_error,
        "lanczos_hvp": A.n_hvp,
    }


def _parameter_blocks(model):
    """(label, size) of each weight tensor: W1, b1, W2, b2, ... for dense layers."""
    for index, variable in enumerate(model.trainable_variables):
        kind = "W" if len(variable.shape) == 2 else "b"
        yield f"{kind}{index // 2 + 1}", int(np.prod(variable.shape))


# --------------------------------------------------------- 3. randomized SVD


def _mlp_hessian(seed):
    """A 6-24-1 tanh MLP's Hessian on a smooth regression problem, and its dense form."""
    import keras

    from . import Hessian

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, 6))
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="float64"),
            keras.layers.Dense(24, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    H = Hessian.from_keras(model, "mse", x, y)
    return H, H.dense()


def _randomized_svd(mlp, out, figures, seed):
    import matplotlib.pyplot as plt

    from . import as_linop, randomized_svd

    H, dense = mlp
    k, oversample, n_iter = 10, 5, 2
    exact = np.linalg.svd(dense, compute_uv=False)
    print(
        f"\n3. Randomized SVD of a 6-24-1 MLP's Hessian ({H.n} parameters, 256 samples): "
        f"k = {k}, oversample {oversample}"
    )
    variants = {
        "range finder (seed's Krylov=1)": {"n_iter": 0, "method": "subspace"},
        f"subspace iteration, {n_iter} steps": {"n_iter": n_iter, "method": "subspace"},
        f"block Krylov, {n_iter} steps": {"n_iter": n_iter, "method": "krylov"},
    }
    results = {}
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    for index, (name, options) in enumerate(variants.items()):
        A = as_linop(H)
        _, s, _ = randomized_svd(A, k, oversample=oversample, rng=seed, **options)
        error = np.abs(s - exact[:k]) / exact[0]
        results[name] = {"relative_errors": error.tolist(), "hvp": A.n_hvp}
        print(f"   {name:<34} max error {error.max():.1e}  ({A.n_hvp} products)")
        ax.semilogy(
            range(1, k + 1),
            np.maximum(error, 1e-17),
            "o-",
            color=f"C{index}",
            label=f"{name} ({A.n_hvp} HVPs)",
        )
    ax.set_xlabel("singular value index j")
    ax.set_ylabel("|s_j - σ_j| / σ_1   (σ: numpy.linalg.svd)")
    ax.set_title("Randomized SVD of a Hessian against the exact SVD")
    ax.legend(fontsize=8)
    _save(figure, out, "randomized_svd.png", figures)
    return {"k": k, "oversample": oversample, "singular_values": exact[:k].tolist(), **results}


# ---------------------------------------------------------------- 4. solvers


def _solvers(mlp, out, figures, seed):
    import matplotlib.pyplot as plt

    from . import as_linop, cg, minres, pcg

    H, dense = mlp
    eigenvalues = np.linalg.eigvalsh(dense)
    g = H.gradient()
    print(
        f"\n4. Newton system H x = g on the MLP Hessian: indefinite, eigenvalues in "
        f"[{eigenvalues[0]:.3g}, {eigenvalues[-1]:.3g}]"
    )
    smallest = float(np.abs(eigenvalues).min())
    print(
        f"   (smallest |eigenvalue| {smallest:.1e}: condition number "
        f"{np.abs(eigenvalues).max() / smallest:.1e})"
    )
    records, histories = {}, {}
    for name, solve in (
        ("CG", lambda A, cb: cg(A, g, rtol=1e-8, maxiter=200, callback=cb)),
        ("MINRES", lambda A, cb: minres(A, g, rtol=1e-8, maxiter=200, callback=cb)),
        (
            "PCG (Nystrom, rank 20)",
            lambda A, cb: pcg(
                A, g, rank=20, oversample=10, rtol=1e-8, maxiter=200, callback=cb, rng=seed
            ),
        ),
    ):
        A = as_linop(H)
        history = [1.0]
        result = solve(A, lambda x, h=history: h.append(_relative_residual(dense, x, g)))
        residual = _relative_residual(dense, result.x, g)
        record = {
            "info": int(result.info),
            "iterations": int(result.n_iter),
            "hvp": int(A.n_hvp),
            "relative_residual": residual,
        }
        certificate = result.negative_curvature
        line = f"   {name:<23} {A.n_hvp:4d} products, |g - Hx|/|g| = {residual:.1e}"
        if certificate is not None:
            d = certificate.direction
            rayleigh = float(d @ dense @ d / (d @ d))
            record["negative_curvature"] = {
                "iteration": int(certificate.iteration),
                "curvature": float(certificate.curvature),
                "dense_rayleigh_quotient": rayleigh,
            }
            action = "stopped on" if result.info == -2 else "recorded"
            line += (
                f"; {action} negative curvature at iteration {certificate.iteration}: "
                f"d'Hd/|d|^2 = {certificate.curvature:.3g} (dense: {rayleigh:.3g})"
            )
        print(line)
        records[name] = record
        histories[name] = history
    print(f"   (lambda_min = {eigenvalues[0]:.3g} bounds every curvature from below)")
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    for index, (name, history) in enumerate(histories.items()):
        ax.semilogy(range(len(history)), history, "-", color=f"C{index}", label=name)
        certificate = records[name].get("negative_curvature")
        if certificate is not None:
            at = certificate["iteration"]
            ax.plot(
                at,
                history[min(at, len(history) - 1)],
                "*",
                color=f"C{index}",
                markersize=14,
                markeredgecolor="k",
            )
    ax.plot(
        [],
        [],
        "*",
        color="0.7",
        markeredgecolor="k",
        markersize=12,
        label="negative curvature found",
    )
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration (symmetric log scale)")
    ax.set_ylabel("|g - H x| / |g|   (dense H)")
    ax.set_title("Newton system H x = g on an indefinite Hessian")
    ax.legend(fontsize=8)
    _save(figure, out, "solvers.png", figures)
    return {
        "lambda_min": float(eigenvalues[0]),
        "lambda_max": float(eigenvalues[-1]),
        "smallest_abs_eigenvalue": smallest,
        **records,
    }


def _relative_residual(dense, x, g):
    return float(np.linalg.norm(g - dense @ x) / np.linalg.norm(g))


# --------------------------------------------------------------- 5. training


def _training(out, figures, quiet, seed):
    import keras
    import matplotlib.pyplot as plt
    import tensorflow as tf
    from tqdm.auto import tqdm

    from . import NewtonCG

    print("\n5. Training the XOR network from the same start: Newton-CG against SGD")
    keras.utils.set_random_seed(seed + 1)
    newton_model = _xor_model()
    sgd_model = _xor_model()
    sgd_model.set_weights(newton_model.get_weights())

    optimizer = NewtonCG.from_keras(newton_model, "mse", _XOR_X, _XOR_Y)
    with tqdm(
        total=50, desc="Newton-CG", unit="step", delay=1.0, disable=quiet, leave=False
    ) as bar:

        def advance(step):
            bar.update(1)
            return False

        history = optimizer.minimize(steps=50, gtol=1e-10, callback=advance)
    newton_losses = history.losses

    epochs = 2000
    sgd = keras.optimizers.SGD(learning_rate=0.1)
    x, y = tf.constant(_XOR_X), tf.constant(_XOR_Y)
    mse = keras.losses.MeanSquaredError()

    @tf.function
    def sgd_step():
        with tf.GradientTape() as tape:
            value = mse(y, sgd_model(x, training=False))
        sgd.apply_gradients(
            zip(
                tape.gradient(value, sgd_model.trainable_variables),
                sgd_model.trainable_variables,
                strict=True,
            )
        )
        return value

    sgd_losses = []
    for _ in tqdm(range(epochs), desc="SGD", unit="epoch", delay=1.0, disable=quiet, leave=False):
        sgd_losses.append(float(sgd_step()))
    sgd_losses.append(float(mse(y, sgd_model(x))))

    def correct(model):
        predictions = model(x, training=False).numpy()
        return int(np.sum(np.round(np.clip(predictions, 0, 1)) == _XOR_Y))

    newton_correct, sgd_correct = correct(newton_model), correct(sgd_model)
    print(
        f"   Newton-CG  loss {newton_losses[-1]:.2e} after {len(history)} steps "
        f"({history.n_hvp} Hessian-vector products, "
        f"{int(history.negative_curvature.sum())} negative-curvature steps), "
        f"{newton_correct}/4 correct"
    )
    print(
        f"   SGD        loss {sgd_losses[-1]:.2e} after {epochs} epochs (learning rate 0.1), "
        f"{sgd_correct}/4 correct"
    )

    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.loglog(range(1, len(newton_losses) + 1), newton_losses, "o-", label="Newton-CG (step)")
    ax.loglog(range(1, len(sgd_losses) + 1), sgd_losses, "-", label="SGD, lr 0.1 (epoch)")
    for index, negative in enumerate(history.negative_curvature, start=1):
        if negative:
            ax.plot(
                index, newton_losses[index - 1], "s", color="C3", markersize=8, fillstyle="none"
            )
    ax.plot([], [], "s", color="C3", fillstyle="none", label="negative-curvature step")
    ax.set_xlabel("iteration (Newton step or SGD epoch), log scale")
    ax.set_ylabel("mean squared error")
    ax.set_title("XOR: Newton-CG against SGD from the same start")
    ax.legend()
    _save(figure, out, "training.png", figures)
    return {
        "newton": {
            "losses": newton_losses.tolist(),
            "steps": len(history),
            "hvp": int(history.n_hvp),
            "negative_curvature_steps": int(history.negative_curvature.sum()),
            "correct": newton_correct,
            "message": history.message,
        },
        "sgd": {
            "final_loss": sgd_losses[-1],
            "epochs": epochs,
            "learning_rate": 0.1,
            "correct": sgd_correct,
        },
    }


# ---------------------------------------------------------------- 6. density


def _density(mlp, out, figures, seed):
    import matplotlib.pyplot as plt

    from . import as_linop, hutchpp_trace, plot_spectral_density, spectral_density

    H, dense = mlp
    exact = np.linalg.eigvalsh(dense)
    A = as_linop(H)
    density = spectral_density(A, num_probes=8, num_steps=40, rng=seed)
    trace, trace_error = hutchpp_trace(as_linop(H), 60, rng=seed)
    extremes_error = max(abs(density.ritz_min - exact[0]), abs(density.ritz_max - exact[-1]))
    print(
        f"\n6. Spectral density of the MLP's Hessian: SLQ, 8 probes x 40 steps "
        f"({A.n_hvp} HVPs in batches of 8)"
    )
    print(
        f"   extreme Ritz values {density.ritz_min:.6f}, {density.ritz_max:.6f}  "
        f"(eigvalsh: {exact[0]:.6f}, {exact[-1]:.6f})"
    )
    print(
        f"   trace: Hutch++ with 60 HVPs {trace:.5f} +- {trace_error:.1e}  "
        f"(exact {exact.sum():.5f})"
    )
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    plot_spectral_density(density, ax=ax, label="SLQ density")
    ax.plot(
        exact,
        np.full(exact.shape, ax.get_ylim()[0]),
        "|",
        color="k",
        markersize=14,
        label="exact eigenvalues",
    )
    ax.set_title(f"Spectral density of a {H.n}-parameter MLP Hessian")
    ax.legend(fontsize=8, loc="center")
    _save(figure, out, "spectral_density.png", figures)
    return {
        "ritz_min": density.ritz_min,
        "ritz_max": density.ritz_max,
        "eigenvalue_min": float(exact[0]),
        "eigenvalue_max": float(exact[-1]),
        "extremes_error": float(extremes_error),
        "hvp": int(A.n_hvp),
        "trace": float(trace),
        "trace_standard_error": float(trace_error),
        "exact_trace": float(exact.sum()),
    }
