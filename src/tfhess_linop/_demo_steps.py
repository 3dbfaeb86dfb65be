"""The computations of ``tfhess-linop demo``, one function per step, with their narration.

Each step prints its lines, checks its numbers against a dense or analytic
reference, and returns ``(record, figure)``: the record goes into the
summary, ``figure`` holds the keyword arguments of the step's plot in
:mod:`._demo_figures`. Kept apart from the plotting so that each step reads
as the computation it demonstrates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cubic", "density", "mlp_hessian", "randomized_svd", "solvers", "training", "xor"]

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


# ----------------------------------------------------------------- 1. cubic


def cubic(seed):
    """Taylor test and power iteration on :math:`2x^3y^3` at (1, 1)."""
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
    record = {
        "taylor_order": float(taylor.order),
        "eigenvalues": [float(largest), float(smallest)],
        "dense_error": dense_error,
    }
    return record, {"taylor": taylor}


# ------------------------------------------------------------------- 2. XOR


def xor_model():
    """The 2-2-1 tanh network of the XOR problem, in float64."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(2, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    return model


def xor():
    """The XOR network's dense Hessian and spectrum, Lanczos at both ends."""
    from . import Hessian, as_linop, eigsh

    print("\n2. XOR network 2-2-1 (tanh), mean squared error on the 4 XOR points")
    model = xor_model()
    H = Hessian.from_keras(model, "mse", XOR_X, XOR_Y)
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
    record = {
        "n": H.n,
        "eigenvalues": exact.tolist(),
        "lanczos_error": lanczos_error,
        "lanczos_hvp": A.n_hvp,
    }
    labels = [f"{name}[{i}]" for name, size in _parameter_blocks(model) for i in range(size)]
    return record, {"dense": dense, "exact": exact, "top": top, "bottom": bottom, "labels": labels}


def _parameter_blocks(model):
    """(label, size) of each weight tensor: W1, b1, W2, b2, ... for dense layers."""
    for index, variable in enumerate(model.trainable_variables):
        kind = "W" if len(variable.shape) == 2 else "b"
        yield f"{kind}{index // 2 + 1}", int(np.prod(variable.shape))


# --------------------------------------------------------- 3. randomized SVD


def mlp_hessian(seed):
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


def randomized_svd(mlp, seed):
    """Range finder, subspace and block Krylov iteration against the exact SVD."""
    from . import as_linop
    from . import randomized_svd as svd

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
    for name, options in variants.items():
        A = as_linop(H)
        _, s, _ = svd(A, k, oversample=oversample, rng=seed, **options)
        error = np.abs(s - exact[:k]) / exact[0]
        results[name] = {"relative_errors": error.tolist(), "hvp": A.n_hvp}
        print(f"   {name:<34} max error {error.max():.1e}  ({A.n_hvp} products)")
    record = {"k": k, "oversample": oversample, "singular_values": exact[:k].tolist(), **results}
    return record, {"k": k, "results": results}


# ---------------------------------------------------------------- 4. solvers


def solvers(mlp, seed):
    """CG, MINRES and Nyström-preconditioned CG on the indefinite Newton system."""
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
        records[name] = _solver_record(name, result, A.n_hvp, dense, g)
        histories[name] = history
    print(f"   (lambda_min = {eigenvalues[0]:.3g} bounds every curvature from below)")
    record = {
        "lambda_min": float(eigenvalues[0]),
        "lambda_max": float(eigenvalues[-1]),
        "smallest_abs_eigenvalue": smallest,
        **records,
    }
    return record, {"histories": histories, "records": records}


def _solver_record(name, result, n_hvp, dense, g):
    """Print one solver's line and return its record, its certificate checked on `dense`."""
    residual = _relative_residual(dense, result.x, g)
    record = {
        "info": int(result.info),
        "iterations": int(result.n_iter),
        "hvp": int(n_hvp),
        "relative_residual": residual,
    }
    certificate = result.negative_curvature
    line = f"   {name:<23} {n_hvp:4d} products, |g - Hx|/|g| = {residual:.1e}"
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
    return record


def _relative_residual(dense, x, g):
    return float(np.linalg.norm(g - dense @ x) / np.linalg.norm(g))


# --------------------------------------------------------------- 5. training


def training(quiet, seed):
    """Newton-CG against SGD on XOR, from the same initial weights."""
    import keras
    import tensorflow as tf
    from tqdm.auto import tqdm

    from . import NewtonCG

    print("\n5. Training the XOR network from the same start: Newton-CG against SGD")
    keras.utils.set_random_seed(seed + 1)
    newton_model = xor_model()
    sgd_model = xor_model()
    sgd_model.set_weights(newton_model.get_weights())

    optimizer = NewtonCG.from_keras(newton_model, "mse", XOR_X, XOR_Y)
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
    x, y = tf.constant(XOR_X), tf.constant(XOR_Y)
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
        return int(np.sum(np.round(np.clip(predictions, 0, 1)) == XOR_Y))

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
    record = {
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
    figure = {
        "newton_losses": newton_losses,
        "sgd_losses": sgd_losses,
        "negative_curvature": history.negative_curvature,
    }
    return record, figure


# ---------------------------------------------------------------- 6. density


def density(mlp, seed):
    """Stochastic Lanczos quadrature and Hutch++ against the exact eigenvalues."""
    from . import as_linop, hutchpp_trace, spectral_density

    H, dense = mlp
    exact = np.linalg.eigvalsh(dense)
    A = as_linop(H)
    estimate = spectral_density(A, num_probes=8, num_steps=40, rng=seed)
    trace, trace_error = hutchpp_trace(as_linop(H), 60, rng=seed)
    extremes_error = max(abs(estimate.ritz_min - exact[0]), abs(estimate.ritz_max - exact[-1]))
    print(
        f"\n6. Spectral density of the MLP's Hessian: SLQ, 8 probes x 40 steps "
        f"({A.n_hvp} HVPs in batches of 8)"
    )
    print(
        f"   extreme Ritz values {estimate.ritz_min:.6f}, {estimate.ritz_max:.6f}  "
        f"(eigvalsh: {exact[0]:.6f}, {exact[-1]:.6f})"
    )
    print(
        f"   trace: Hutch++ with 60 HVPs {trace:.5f} +- {trace_error:.1e}  "
        f"(exact {exact.sum():.5f})"
    )
    record = {
        "ritz_min": estimate.ritz_min,
        "ritz_max": estimate.ritz_max,
        "eigenvalue_min": float(exact[0]),
        "eigenvalue_max": float(exact[-1]),
        "extremes_error": float(extremes_error),
        "hvp": int(A.n_hvp),
        "trace": float(trace),
        "trace_standard_error": float(trace_error),
        "exact_trace": float(exact.sum()),
    }
    return record, {"density": estimate, "exact": exact, "n": H.n}
