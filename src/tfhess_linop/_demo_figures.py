"""The figures of ``tfhess-linop demo``: one function per step, drawing what the step returned.

Each function takes the ``figure`` dict of its step in :mod:`._demo_steps`
as keyword arguments and returns a Matplotlib figure, which
:func:`~tfhess_linop.demo.run_demo` saves; nothing here computes a result
that the summary reports. Matplotlib is imported on first use, after
:func:`~tfhess_linop.demo.run_demo` has selected its file-only backend.
"""

from __future__ import annotations

import numpy as np

__all__ = ["density", "randomized_svd", "solvers", "taylor", "training", "xor"]


def taylor(taylor):
    """Step 1: the Taylor remainder of the cubic loss against slope 3."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(taylor.steps, taylor.errors, "o-", label="|L(w+hv) - quadratic model|")
    reference = taylor.errors[0] * (taylor.steps / taylor.steps[0]) ** 3
    ax.loglog(taylor.steps, reference, "--", color="0.5", label="slope 3")
    ax.set_xlabel("step h")
    ax.set_ylabel("second-order Taylor remainder")
    ax.set_title(f"Taylor test of 2x³y³: observed order {taylor.order:.2f}")
    ax.legend()
    return figure


def xor(dense, exact, top, bottom, labels):
    """Step 2: the XOR Hessian as an image, and its spectrum with the Lanczos values."""
    import matplotlib.pyplot as plt

    n = dense.shape[0]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.25, 1]}
    )
    limit = np.abs(dense).max()
    image = left.imshow(dense, cmap="RdBu_r", vmin=-limit, vmax=limit)
    left.set_xticks(range(n), labels, rotation=90, fontsize=7)
    left.set_yticks(range(n), labels, fontsize=7)
    left.set_title("XOR Hessian (diverging colours, 0 = white)")
    figure.colorbar(image, ax=left, shrink=0.85)
    right.axhline(0.0, color="0.6", linewidth=0.8)
    right.plot(range(1, n + 1), exact, "o", label="numpy.linalg.eigvalsh")
    lanczos = np.concatenate([np.sort(bottom), np.sort(top)])
    right.plot([1, 2, n - 1, n], lanczos, "x", color="C3", markersize=9, label="Lanczos (eigsh)")
    right.set_xlabel("index")
    right.set_ylabel("eigenvalue")
    right.set_title("Spectrum: indefinite")
    right.legend()
    return figure


def randomized_svd(k, results):
    """Step 3: each variant's relative errors on the top `k` singular values."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    for index, (name, result) in enumerate(results.items()):
        ax.semilogy(
            range(1, k + 1),
            np.maximum(np.asarray(result["relative_errors"]), 1e-17),
            "o-",
            color=f"C{index}",
            label=f"{name} ({result['hvp']} HVPs)",
        )
    ax.set_xlabel("singular value index j")
    ax.set_ylabel("|s_j - σ_j| / σ_1   (σ: numpy.linalg.svd)")
    ax.set_title("Randomized SVD of a Hessian against the exact SVD")
    ax.legend(fontsize=8)
    return figure


def solvers(histories, records):
    """Step 4: relative residuals per iteration, a star where curvature went negative."""
    import matplotlib.pyplot as plt

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
    return figure


def training(newton_losses, sgd_losses, negative_curvature):
    """Step 5: the two loss curves, Newton steps on negative curvature marked."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.loglog(range(1, len(newton_losses) + 1), newton_losses, "o-", label="Newton-CG (step)")
    ax.loglog(range(1, len(sgd_losses) + 1), sgd_losses, "-", label="SGD, lr 0.1 (epoch)")
    for index, negative in enumerate(negative_curvature, start=1):
        if negative:
            ax.plot(
                index, newton_losses[index - 1], "s", color="C3", markersize=8, fillstyle="none"
            )
    ax.plot([], [], "s", color="C3", fillstyle="none", label="negative-curvature step")
    ax.set_xlabel("iteration (Newton step or SGD epoch), log scale")
    ax.set_ylabel("mean squared error")
    ax.set_title("XOR: Newton-CG against SGD from the same start")
    ax.legend()
    return figure


def density(density, exact, n):
    """Step 6: the SLQ density, with the exact eigenvalues as ticks."""
    import matplotlib.pyplot as plt

    from . import plot_spectral_density

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
    ax.set_title(f"Spectral density of a {n}-parameter MLP Hessian")
    ax.legend(fontsize=8, loc="center")
    return figure
