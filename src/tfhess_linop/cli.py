"""The ``tfhess-linop`` command.

::

    tfhess-linop demo [--out DIR] [--quiet] [--verbose] [--debug]
    tfhess-linop spectrum MODEL.keras DATA.npz [--loss NAME] [-k K]
                 [--which largest|smallest|both] [--batch-size B] [--out DIR]
                 [--density] [--trace] [--plot] [--progress] [--quiet]
                 [--verbose] [--debug]
    mpiexec -n 4 tfhess-linop spectrum ...

``python -m tfhess_linop`` is the same command. ``--help``, ``--version``,
argument errors, missing or unreadable files and an unusable ``--out``
answer before TensorFlow is imported (`_cli_inputs`). Every failure ends in
one line ``tfhess-linop: error: ...`` on standard error, with exit status 2
for bad input (a missing file, wrong array names, data that do not fit the
model, an unknown loss) and 1 otherwise; ``--debug`` adds the traceback.
TensorFlow's C++ log lines are hidden unless ``--verbose`` (`_cli_logs`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ._cli_inputs import (
    UsageError,
    check_arguments,
    describe_loss,
    load_data,
    load_model,
    one_line,
    prepare_folder,
)
from ._cli_logs import NativeLogFilter

__all__ = ["main"]

_WHICH = {"largest": ("LA",), "smallest": ("SA",), "both": ("LA", "SA")}
_WHICH_NAMES = {"LA": "largest", "SA": "smallest"}


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with every error line starting ``tfhess-linop: error:``.

    argparse names a subcommand's errors after it ("tfhess-linop spectrum:
    error: ..."); one prefix for all failures is easier to grep for.
    """

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"tfhess-linop: error: {message}\n")


def _parser():
    from . import __version__

    # --verbose and --debug are accepted before and after the command name;
    # SUPPRESS keeps a subcommand's unset copy from overwriting the top-level one.
    def switches(parser, default):
        parser.add_argument(
            "--verbose",
            action="store_true",
            default=default,
            help="show TensorFlow's own log lines (hidden by default)",
        )
        parser.add_argument(
            "--debug",
            action="store_true",
            default=default,
            help="show the traceback of an error",
        )

    parser = _ArgumentParser(
        prog="tfhess-linop",
        description="The Hessian of a TensorFlow/Keras loss as a SciPy LinearOperator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    switches(parser, False)
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
    switches(demo, argparse.SUPPRESS)

    spectrum = commands.add_parser(
        "spectrum",
        help="extreme Hessian eigenvalues of a saved Keras model on data",
        description="Load a saved Keras model and arrays `x`, `y` (and optionally "
        "`sample_weight`) from an .npz file; compute the extreme eigenvalues of the "
        "Hessian of the model's training objective (its compiled loss, or --loss) with "
        "Lanczos (and optionally the spectral density and the trace); write "
        "spectrum.json and plots. Under mpiexec the data are split over the ranks; "
        "rank 0 prints and writes.",
    )
    spectrum.add_argument("model", metavar="MODEL.keras", help="a model saved with model.save")
    spectrum.add_argument(
        "data", metavar="DATA.npz", help="arrays named x and y, optionally sample_weight"
    )
    spectrum.add_argument(
        "--loss", help="Keras loss name replacing the compiled loss (default: the compiled loss)"
    )
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
        help="samples per forward pass (memory only; the Hessian stays that of all the data)",
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
    spectrum.add_argument(
        "--plot",
        action="store_true",
        help="also draw the eigenvalues (and with --density the density) into spectrum.png",
    )
    spectrum.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on passes that take more than a second",
    )
    spectrum.add_argument("--quiet", action="store_true", help="print only the result")
    switches(spectrum, argparse.SUPPRESS)
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
        The exit status: 0 on success, 2 on bad input, 1 on any other
        failure, 130 when interrupted.

    Examples
    --------
    >>> from tfhess_linop.cli import main
    >>> main(["spectrum", "missing.keras", "missing.npz"])  # doctest: +SKIP
    tfhess-linop: error: MODEL.keras: no such file: missing.keras
    2
    """
    args = _parser().parse_args(argv)
    try:
        with NativeLogFilter(enabled=not args.verbose):
            if args.command == "demo":
                _demo(args)
            else:
                _spectrum(args)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except UsageError as exc:
        return _fail(args, str(exc), 2)
    except Exception as exc:
        return _fail(args, f"{type(exc).__name__}: {one_line(exc)}", 1)
    return 0


def _fail(args, message, status):
    if args.debug:
        import traceback

        traceback.print_exc()
    print(f"tfhess-linop: error: {message}", file=sys.stderr)
    return status


def _demo(args):
    prepare_folder(args.out)
    from .demo import run_demo

    run_demo(args.out, quiet=args.quiet)


def _world():
    """MPI.COMM_WORLD when launched on several ranks, else None (no MPI import)."""
    from . import _mpi

    if _mpi.launcher_size() <= 1:
        return None
    return _mpi.world()


def _spectrum(args):
    check_arguments(args)
    x, y, sample_weight = load_data(args.data)
    comm = _world()

    from . import _mpi

    root = _mpi.rank(comm) == 0
    # Only rank 0 writes; the ranks agree so that none starts the computation alone.
    problem = None
    if root:
        try:
            prepare_folder(args.out)
        except UsageError as exc:
            problem = str(exc)
    _mpi.agree(problem is None, problem or "rank 0 cannot write to --out.", comm, UsageError)

    model, compile_problem = load_model(args.model)
    if args.loss is None and not getattr(model, "compiled", False):
        if compile_problem is not None:
            raise UsageError(
                f"{args.model}: its compiled loss could not be restored ({compile_problem}); "
                "name one with --loss."
            )
        raise UsageError(f"{args.model}: the model was saved without a loss; name one with --loss.")

    import numpy as np

    from ._progress import counting
    from .eigen import eigsh
    from .hessian import Hessian
    from .linop import as_linop

    say = print if root else (lambda *a, **k: None)
    show = root and not args.quiet
    bars = root and args.progress

    started = time.perf_counter()
    H = _build_hessian(Hessian, model, args, x, y, sample_weight, comm)
    A = as_linop(H)
    if args.k >= H.n:
        raise UsageError(f"-k must be smaller than the number of parameters, {H.n}; got {args.k}.")
    loss_value, gradient = H.value_and_gradient()
    loss_name = describe_loss(args.loss if args.loss is not None else getattr(model, "loss", None))
    if show:
        weighted = "" if sample_weight is None else " (weighted by sample_weight)"
        say(
            f"model {args.model}: {H.n} parameters; data {args.data}: {H.n_samples} samples"
            f"{'' if comm is None else f' on {_mpi.size(comm)} ranks'}"
        )
        say(
            f"loss {loss_name or 'of the model'}{weighted} = {loss_value:.6g}, "
            f"|gradient| = {np.linalg.norm(gradient):.3g}"
        )

    result = {
        "model": os.path.abspath(args.model),
        "data": os.path.abspath(args.data),
        "loss": loss_name,
        "sample_weight": sample_weight is not None,
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
        with counting(A, f"Lanczos ({name})", bars) as counted:
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
        # At least 4 products (Hutch++'s minimum); n or more give the exact trace.
        matvecs = max(4, min(args.trace_matvecs, H.n))
        with counting(A, "Hutch++ trace", bars, total=min(matvecs, H.n)) as counted:
            estimate = hutchpp_trace(counted, matvecs, rng=args.seed)
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
        with counting(A, "SLQ density", bars, total=args.probes * args.steps) as counted:
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
        _write_results(args, result, density)
        say(f"wrote {', '.join(result['files'])} to {os.path.abspath(args.out)}")


def _build_hessian(Hessian, model, args, x, y, sample_weight, comm):
    """`Hessian.from_keras`, its construction-time errors as one-line bad input.

    Construction evaluates the objective on all the data, so data that do
    not fit the model or the loss (shapes, dtypes, class labels out of
    range) fail here, before any product.
    """
    import tensorflow as tf

    try:
        return Hessian.from_keras(
            model,
            args.loss,
            x,
            y,
            sample_weight=sample_weight,
            batch_size=args.batch_size,
            comm=comm,
        )
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as exc:
        # The messages name from_keras' arguments; `x`, `y` and `sample_weight`
        # are also the arrays' names in DATA.npz, the others are options here.
        message = one_line(exc).replace("`batch_size`", "--batch-size")
        if args.loss is not None:
            message = message.replace("`loss`", "--loss")
        raise UsageError(f"{args.model} on {args.data}: {message}") from exc


def _write_results(args, result, density):
    """spectrum.json, and with --plot the figure spectrum.png, into --out."""
    files = ["spectrum.json"]
    if args.plot:
        from ._cli_plots import write_figure

        write_figure(os.path.join(args.out, "spectrum.png"), result, density)
        files.append("spectrum.png")
    result["files"] = files
    with open(os.path.join(args.out, "spectrum.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
