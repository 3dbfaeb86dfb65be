"""The ``tfhess-linop`` command.

::

    tfhess-linop demo [--out DIR] [--quiet]
    tfhess-linop spectrum MODEL.keras DATA.npz [--loss NAME] [-k K]
                 [--which largest|smallest|both] [--batch-size B] [--out DIR]
                 [--density] [--trace] [--quiet]
    mpiexec -n 4 tfhess-linop spectrum ...

``python -m tfhess_linop`` is the same command. Bad input (a missing file,
wrong array names, data that does not fit the model, an unknown loss) gives
a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings

__all__ = ["main"]

_WHICH = {"largest": ("LA",), "smallest": ("SA",), "both": ("LA", "SA")}
_WHICH_NAMES = {"LA": "largest", "SA": "smallest"}


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


def _parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tfhess-linop",
        description="The Hessian of a TensorFlow/Keras loss as a SciPy LinearOperator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the walkthrough: Taylor test, XOR Hessian, randomized SVD, "
        "CG/MINRES, Newton-CG training",
        description="Run the walkthrough on small embedded problems (under a minute), "
        "print a summary and write its figures as PNG files.",
    )
    demo.add_argument(
        "--out",
        default="tfhess-linop-demo",
        help="folder for the figures and summary.json (default: %(default)s)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    spectrum = commands.add_parser(
        "spectrum",
        help="extreme Hessian eigenvalues of a saved Keras model on data",
        description="Load a saved Keras model and arrays `x`, `y` from an .npz file; "
        "compute the extreme eigenvalues of the Hessian of the mean loss with Lanczos "
        "(and optionally the spectral density and the trace); write spectrum.json and "
        "plots. Under mpiexec the data are split over the ranks; rank 0 prints and writes.",
    )
    spectrum.add_argument("model", metavar="MODEL.keras", help="a model saved with model.save")
    spectrum.add_argument("data", metavar="DATA.npz", help="arrays named x and y")
    spectrum.add_argument("--loss", help="Keras loss name (default: the model's compiled loss)")
    spectrum.add_argument(
        "-k", type=int, default=3, help="eigenvalues at each end (default: %(default)s)"
    )
    spectrum.add_argument(
        "--which",
        choices=tuple(_WHICH),
        default="both",
        help="which end of the spectrum (default: %(default)s)",
    )
    spectrum.add_argument(
        "--batch-size",
        type=int,
        help="samples per forward pass (memory only; the Hessian is that of the full mean loss)",
    )
    spectrum.add_argument("--out", default=".", help="output folder (default: current)")
    spectrum.add_argument(
        "--density", action="store_true", help="also estimate the spectral density (SLQ)"
    )
    spectrum.add_argument(
        "--probes", type=int, default=8, help="SLQ probes for --density (default: %(default)s)"
    )
    spectrum.add_argument(
        "--steps",
        type=int,
        default=60,
        help="Lanczos steps per probe for --density (default: %(default)s)",
    )
    spectrum.add_argument("--trace", action="store_true", help="also estimate the trace (Hutch++)")
    spectrum.add_argument(
        "--trace-matvecs",
        type=int,
        default=60,
        help="Hessian-vector products for --trace, at least 4 (default: %(default)s)",
    )
    spectrum.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    spectrum.add_argument("--quiet", action="store_true", help="print only the result")
    return parser


def main(argv=None):
    """Run the ``tfhess-linop`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 2 on bad input.

    Examples
    --------
    >>> from tfhess_linop.cli import main
    >>> main(["spectrum", "missing.keras", "missing.npz"])  # doctest: +SKIP
    tfhess-linop: error: MODEL.keras: no such file: missing.keras
    2
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(args.out, quiet=args.quiet)
        else:
            _spectrum(args)
    except UsageError as exc:
        print(f"tfhess-linop: error: {exc}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------ spectrum


def _check_arguments(args):
    for label, path in (("MODEL.keras", args.model), ("DATA.npz", args.data)):
        if not os.path.isfile(path):
            raise UsageError(f"{label}: no such file: {path}")
    for name in ("k", "batch_size", "probes", "steps", "trace_matvecs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            option = "-k" if name == "k" else "--" + name.replace("_", "-")
            raise UsageError(f"{option} must be a positive integer; got {value}.")
    if args.trace_matvecs < 4:
        raise UsageError(f"--trace-matvecs must be at least 4; got {args.trace_matvecs}.")


def _load_data(path):
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "x" not in names or "y" not in names:
                raise UsageError(
                    f"{path}: expected arrays named 'x' and 'y'; found {names or 'none'}."
                )
            x, y = archive["x"], archive["y"]
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: not a readable .npz file ({exc}).") from None
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise UsageError(
            f"{path}: x and y must have the same number of samples along their first "
            f"axis; got shapes {x.shape} and {y.shape}."
        )
    if len(x) == 0:
        raise UsageError(f"{path}: x and y hold no samples.")
    return x, y


def _load_model(path):
    """The saved model, compiled when possible (for its loss); the optimizer is unused."""
    import keras

    with warnings.catch_warnings():
        # Keras warns when the saved optimizer state does not match; it is not needed.
        warnings.simplefilter("ignore")
        try:
            return keras.models.load_model(path, compile=True)
        except Exception:
            pass
        try:
            return keras.models.load_model(path, compile=False)
        except Exception as exc:
            reason = _first_line(exc).split(". ")[0].rstrip(".")
            raise UsageError(f"{path}: cannot load a Keras model ({reason}).") from None


def _resolve_loss(name, model):
    import keras

    if name is None:
        compiled = getattr(model, "loss", None)
        if compiled is None:
            raise UsageError("the model was saved without a loss; name one with --loss.")
        return compiled
    try:
        keras.losses.get(name)
    except (ValueError, TypeError):
        raise UsageError(f"unknown loss {name!r}; give a Keras loss name such as 'mse'.") from None
    return name


def _check_fit(model, loss, x, y):
    """Evaluate the loss on two samples, turning a shape mismatch into a UsageError."""
    import tensorflow as tf

    from ._keras import per_sample_loss

    try:
        predictions = model(x[:2], training=False)
    except Exception as exc:
        raise UsageError(
            f"x of shape {x.shape} does not fit the model's input "
            f"{_shape_text(model)}: {_first_line(exc)}"
        ) from None
    try:
        targets = tf.convert_to_tensor(y[:2])
        if targets.dtype.is_floating and targets.dtype != predictions.dtype:
            targets = tf.cast(targets, predictions.dtype)
        per_sample_loss(loss)(targets, predictions)
    except Exception as exc:
        raise UsageError(
            f"y of shape {y.shape} does not fit the model's output of shape "
            f"(None, {', '.join(str(d) for d in predictions.shape[1:])}) for this loss: "
            f"{_first_line(exc)}"
        ) from None


def _shape_text(model):
    shape = getattr(model, "input_shape", None)
    return str(shape) if shape is not None else "(unknown shape)"


def _first_line(exc, limit=200):
    """The informative first line of an exception's message, without colours."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered")]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _world():
    """MPI.COMM_WORLD when launched on several ranks, else None (no MPI import)."""
    from . import _mpi

    if _mpi.launcher_size() <= 1:
        return None
    return _mpi.world()


def _spectrum(args):
    _check_arguments(args)
    comm = _world()
    x, y = _load_data(args.data)
    model = _load_model(args.model)
    loss = _resolve_loss(args.loss, model)
    _check_fit(model, loss, x, y)

    import numpy as np

    from . import _mpi
    from .eigen import eigsh
    from .hessian import Hessian
    from .linop import as_linop

    root = _mpi.rank(comm) == 0
    say = print if root else (lambda *a, **k: None)
    show = root and not args.quiet

    started = time.perf_counter()
    H = Hessian.from_keras(model, loss, x, y, batch_size=args.batch_size, comm=comm)
    A = as_linop(H)
    if args.k >= H.n:
        raise UsageError(f"-k must be smaller than the number of parameters, {H.n}; got {args.k}.")
    loss_value, gradient = H.value_and_gradient()
    loss_name = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)
    if show:
        say(
            f"model {args.model}: {H.n} parameters; data {args.data}: {H.n_samples} samples"
            f"{'' if comm is None else f' on {_mpi.size(comm)} ranks'}"
        )
        say(f"loss {loss_name} = {loss_value:.6g}, |gradient| = {np.linalg.norm(gradient):.3g}")

    result = {
        "model": os.path.abspath(args.model),
        "data": os.path.abspath(args.data),
        "loss": loss_name,
        "n_parameters": H.n,
        "n_samples": H.n_samples,
        "ranks": _mpi.size(comm),
        "batch_size": args.batch_size,
        "loss_value": loss_value,
        "gradient_norm": float(np.linalg.norm(gradient)),
        "eigenvalues": {},
    }
    for which in _WHICH[args.which]:
        name = _WHICH_NAMES[which]
        before, tic = A.n_hvp, time.perf_counter()
        with _progress(A, f"Lanczos ({name})", show) as counted:
            values = eigsh(counted, k=args.k, which=which, return_eigenvectors=False, tol=1e-6)
        values = np.sort(values)[::-1] if which == "LA" else np.sort(values)
        result["eigenvalues"][name] = {
            "values": [float(v) for v in values],
            "hvp": A.n_hvp - before,
            "seconds": time.perf_counter() - tic,
        }
        say(
            f"{name} eigenvalues: {', '.join(f'{v:.6g}' for v in values)}  "
            f"({A.n_hvp - before} Hessian-vector products)"
        )
    if args.trace:
        from .estimators import hutchpp_trace

        before = A.n_hvp
        with _progress(A, "Hutch++ trace", show) as counted:
            # At least 4 products (Hutch++'s minimum); n or more give the exact trace.
            estimate = hutchpp_trace(counted, max(4, min(args.trace_matvecs, H.n)), rng=args.seed)
        result["trace"] = {
            "estimate": float(estimate.estimate),
            "standard_error": float(estimate.standard_error),
            "method": "hutch++",
            "hvp": A.n_hvp - before,
        }
        say(
            f"trace ≈ {estimate.estimate:.6g} ± {estimate.standard_error:.2g} "
            f"(Hutch++, {A.n_hvp - before} Hessian-vector products)"
        )
    density = None
    if args.density:
        from .estimators import spectral_density

        before = A.n_hvp
        with _progress(A, "SLQ density", show) as counted:
            density = spectral_density(counted, args.probes, args.steps, rng=args.seed)
        result["density"] = {
            "probes": int(density.num_probes),
            "steps": int(density.num_steps.max()),
            "sigma": float(density.sigma),
            "ritz_min": float(density.ritz_min),
            "ritz_max": float(density.ritz_max),
            "grid": density.grid.tolist(),
            "density": density.density.tolist(),
            "hvp": A.n_hvp - before,
        }
        say(
            f"spectral density: Ritz values in [{density.ritz_min:.6g}, "
            f"{density.ritz_max:.6g}] ({A.n_hvp - before} Hessian-vector products)"
        )
    result["hvp_total"] = A.n_hvp
    result["seconds"] = time.perf_counter() - started
    if root:
        _write_spectrum(args.out, result, density)
        say(f"wrote {', '.join(result['files'])} to {os.path.abspath(args.out)}")


def _write_spectrum(out, result, density):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    files = ["spectrum.json", "spectrum.png"]
    bars = [
        (name, position, value, entry["hvp"])
        for name, entry in result["eigenvalues"].items()
        for position, value in enumerate(entry["values"], start=1)
    ]
    figure, ax = plt.subplots(figsize=(7, 1.2 + 0.35 * len(bars)))
    colors = {"largest": "C0", "smallest": "C3"}
    labels = [f"{name} #{position}" for name, position, _, _ in bars]
    values = [value for _, _, value, _ in bars]
    rows = range(len(bars))[::-1]
    ax.barh(rows, values, color=[colors[name] for name, *_ in bars], height=0.6)
    span = max(abs(v) for v in values) or 1.0
    for row, value in zip(rows, values, strict=True):
        ax.annotate(
            f"{value:.4g}",
            (value, row),
            xytext=(4 if value >= 0 else -4, 0),
            textcoords="offset points",
            va="center",
            ha="left" if value >= 0 else "right",
            fontsize=8,
        )
    ax.set_yticks(list(rows), labels)
    ax.set_xlim(min(0.0, min(values)) - 0.25 * span, max(0.0, max(values)) + 0.25 * span)
    ax.axvline(0.0, color="0.4", linewidth=0.8)
    ax.set_xlabel("eigenvalue")
    hvps = ", ".join(f"{name}: {entry['hvp']}" for name, entry in result["eigenvalues"].items())
    ax.set_title(
        f"Hessian extreme eigenvalues ({result['n_parameters']} parameters, "
        f"{result['n_samples']} samples, loss {result['loss']})\n"
        f"Lanczos Hessian-vector products: {hvps}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(os.path.join(out, "spectrum.png"), dpi=120)
    plt.close(figure)
    if density is not None:
        from .estimators import plot_spectral_density

        figure, ax = plt.subplots(figsize=(7, 4))
        plot_spectral_density(density, ax)
        figure.tight_layout()
        figure.savefig(os.path.join(out, "density.png"), dpi=120)
        plt.close(figure)
        files.append("density.png")
    result["files"] = files
    with open(os.path.join(out, "spectrum.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


class _progress:
    """A context giving an operator that advances a progress bar at every product.

    The bar appears only if the pass takes more than a second.
    """

    def __init__(self, operator, description, show):
        self.operator, self.description, self.show = operator, description, show

    def __enter__(self):
        from scipy.sparse.linalg import LinearOperator
        from tqdm.auto import tqdm

        self.bar = tqdm(
            desc=self.description, unit="hvp", delay=1.0, disable=not self.show, leave=False
        )
        inner, bar = self.operator, self.bar

        class Counted(LinearOperator):
            comm = inner.comm

            def _matvec(self, v):
                bar.update(1)
                return inner.matvec(v)

            def _matmat(self, V):
                bar.update(V.shape[1])
                return inner.matmat(V)

            def _adjoint(self):
                return self

        return Counted(dtype=inner.dtype, shape=inner.shape)

    def __exit__(self, *exc):
        self.bar.close()
        return False
