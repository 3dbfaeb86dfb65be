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
and returns the summary as a dict. This module only runs the steps in order
and saves what they return: the steps (computations, checks and printed
lines) are in :mod:`._demo_steps`, their figures in :mod:`._demo_figures`.
"""

from __future__ import annotations

import json
import os
import time

from . import _demo_figures, _demo_steps

__all__ = ["run_demo"]


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

    def show(draw, data, name):
        _save(draw(**data), out, name, figures)

    summary["cubic"], data = _demo_steps.cubic(seed)
    show(_demo_figures.taylor, data, "taylor.png")
    summary["xor"], data = _demo_steps.xor()
    show(_demo_figures.xor, data, "xor_hessian.png")
    mlp = _demo_steps.mlp_hessian(seed)
    summary["randomized_svd"], data = _demo_steps.randomized_svd(mlp, seed)
    show(_demo_figures.randomized_svd, data, "randomized_svd.png")
    summary["solvers"], data = _demo_steps.solvers(mlp, seed)
    show(_demo_figures.solvers, data, "solvers.png")
    summary["training"], data = _demo_steps.training(quiet, seed)
    show(_demo_figures.training, data, "training.png")
    summary["density"], data = _demo_steps.density(mlp, seed)
    show(_demo_figures.density, data, "spectral_density.png")
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
