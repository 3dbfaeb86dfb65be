"""The ``tfhess-linop`` command.

::

    tfhess-linop demo [--out DIR] [--quiet] [--verbose] [--debug]
    tfhess-linop spectrum MODEL.keras DATA.npz [--loss NAME] [-k K]
                 [--which largest|smallest|both] [--batch-size B] [--out DIR]
                 [--density] [--trace] [--quiet] [--verbose] [--debug]
    mpiexec -n 4 tfhess-linop spectrum ...

``python -m tfhess_linop`` is the same command. ``--help``, ``--version``,
argument errors, missing or unreadable files and an unusable ``--out``
answer before TensorFlow is imported. Every failure ends in one line
``tfhess-linop: error: ...`` on standard error, with exit status 2 for bad
input (a missing file, wrong array names, data that do not fit the model, an
unknown loss) and 1 otherwise; ``--debug`` adds the traceback. TensorFlow's
C++ log lines are hidden unless ``--verbose``.
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
        with _NativeLogFilter(enabled=not args.verbose):
            if args.command == "demo":
                _demo(args)
            else:
                _spectrum(args)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except UsageError as exc:
        return _fail(args, str(exc), 2)
    except Exception as exc:
        return _fail(args, f"{type(exc).__name__}: {_one_line(exc)}", 1)
    return 0


def _fail(args, message, status):
    if args.debug:
        import traceback

        traceback.print_exc()
    print(f"tfhess-linop: error: {message}", file=sys.stderr)
    return status


# ------------------------------------------------------------ native logs

# TensorFlow's C++ runtime logs through absl/glog straight to file descriptor
# 2: "I0000 00:00:1764000000.123456   4242 cpu_feature_guard.cc:227] ..."
# (the seconds count from the epoch until absl is initialised), before
# TF 2.16 "2024-01-01 12:00:00.123456: I tensorflow/...". Neither
# TF_CPP_MIN_LOG_LEVEL nor Python's sys.stderr can stop all of it in TF 2.21
# (absl prints its "before InitializeLog" notice regardless), so the command
# filters the descriptor itself. Two messages continue on a second line: the
# CPU-instruction notice and the failing node of a kernel error. Fatal lines
# ("F0000 ...") are kept: they explain the crash that follows.
_NATIVE_LINE = re.compile(
    rb"^\r?(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .*rebuild TensorFlow"
    rb"|\t \[\[\{\{node )"
)
# First bytes of a partial line that may still turn into a native log line.
_NATIVE_START = b"IWET\t0123456789"


class _NativeLogFilter:
    """Drop TensorFlow's C++ log lines from file descriptor 2 while active.

    Descriptor 2 is pointed at a pipe; a thread forwards everything that is
    not a native log line to the original standard error as it arrives
    (partial lines too, so that progress bars still move), and the original
    descriptor is restored on exit. Set up before TensorFlow is imported:
    its start-up lines come at import.
    """

    def __init__(self, enabled=True):
        self.enabled = enabled and os.name == "posix"
        self.thread = None

    def __enter__(self):
        if not self.enabled:
            return self
        import threading

        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            return self
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(
            target=self._pump, args=(read,), name="tfhess-linop-stderr", daemon=True
        )
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is None:
            return False
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        # Restoring descriptor 2 closes the pipe's last write end: the thread
        # reads what is left, then end-of-file.
        os.dup2(self.saved, 2)
        self.thread.join(timeout=5.0)
        os.close(self.saved)
        self.thread = None
        return False

    def _pump(self, read):
        import select

        pending, forwarding = b"", False
        try:
            while True:
                if pending:
                    # A held-back partial line that does not complete soon is
                    # not a log line (glog writes whole lines at once).
                    ready, _, _ = select.select([read], [], [], 0.1)
                    if not ready:
                        self._write(pending)
                        pending, forwarding = b"", True
                        continue
                chunk = os.read(read, 65536)
                if not chunk:
                    if pending and not _NATIVE_LINE.match(pending):
                        self._write(pending)
                    return
                *lines, tail = (pending + chunk).split(b"\n")
                pending, kept = b"", []
                for line in lines:
                    if forwarding or not _NATIVE_LINE.match(line):
                        kept.append(line + b"\n")
                    forwarding = False
                if tail:
                    if forwarding or tail.lstrip(b"\r")[:1] not in _NATIVE_START:
                        kept.append(tail)
                        forwarding = True
                    else:
                        pending = tail
                self._write(b"".join(kept))
        finally:
            os.close(read)

    def _write(self, data):
        while data:
            try:
                written = os.write(self.saved, data)
            except OSError:
                return
            data = data[written:]


def _one_line(exc, limit=300):
    """The informative part of an exception's message, in one line.

    TensorFlow's op errors carry the Python stack of the failing node, and
    Keras' the call arguments; what remains is the reason.
    """
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else str(exc)
    kept, frame = [], False
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).strip()
        if frame and raw.startswith("    ") and not raw.strip().startswith("File "):
            continue  # the source line of a stack frame
        frame = line.startswith('File "')
        if (
            not line
            or frame
            or line.startswith(("Detected at node", "Exception encountered", "[[", "Arguments"))
            or line.startswith(("Graph execution error", "Traceback"))
            or line == "Stack trace for op definition:"
            or re.match(r"^[•\-] ", line)
        ):
            continue
        kept.append(line.replace("Graph execution error:", "").strip())
    text = re.sub(r"\s+", " ", " ".join(kept)).strip() or type(exc).__name__
    text = re.sub(r" ?\[Op:[^\]]*\]", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -------------------------------------------------------------- checks


def _prepare_folder(folder, option="--out"):
    """Create `folder` and check that a file can be written there, before any work."""
    import tempfile

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{option} {folder}: exists and is not a folder.")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"{option} {folder}: cannot write there ({reason}).") from exc


def _demo(args):
    _prepare_folder(args.out)
    from .demo import run_demo

    run_demo(args.out, quiet=args.quiet)


# ------------------------------------------------------------------ spectrum

_MODEL_FORMATS = ".keras archive (model.save('model.keras')) or an HDF5 .h5 file"


def _check_arguments(args):
    for label, path in (("MODEL.keras", args.model), ("DATA.npz", args.data)):
        if not os.path.isfile(path):
            raise UsageError(f"{label}: no such file: {path}")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{label}: cannot read {path} (permission denied).")
    for name in ("k", "batch_size", "probes", "steps", "trace_matvecs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            option = "-k" if name == "k" else "--" + name.replace("_", "-")
            raise UsageError(f"{option} must be a positive integer; got {value}.")
    if args.trace_matvecs < 4:
        raise UsageError(f"--trace-matvecs must be at least 4; got {args.trace_matvecs}.")
    _check_model_file(args.model)


def _check_model_file(path):
    """Refuse a file that cannot hold a Keras model, without importing Keras."""
    import zipfile

    try:
        with open(path, "rb") as handle:
            start = handle.read(8)
        if start == b"\x89HDF\r\n\x1a\n":
            return
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise UsageError(
            f"{path}: cannot load a Keras model (not a {_MODEL_FORMATS}: {exc})."
        ) from exc
    if "config.json" not in names:
        raise UsageError(
            f"{path}: cannot load a Keras model (a zip archive without config.json; "
            f"expected a {_MODEL_FORMATS})."
        )


_DATA_NAMES = ("x", "y", "sample_weight")


def _load_data(path):
    """Arrays x, y and the optional sample_weight of an .npz file (None if absent)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "x" not in names or "y" not in names:
                raise UsageError(
                    f"{path}: expected arrays named 'x' and 'y' (and optionally "
                    f"'sample_weight'); found {names or 'none'}."
                )
            unknown = [name for name in names if name not in _DATA_NAMES]
            if unknown:
                raise UsageError(
                    f"{path}: unexpected arrays {unknown}; the archive holds 'x', 'y' "
                    "and optionally 'sample_weight'."
                )
            arrays = {name: archive[name] for name in names}
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: not a readable .npz file ({exc}).") from exc
    x, y = arrays["x"], arrays["y"]
    sample_weight = arrays.get("sample_weight")
    shapes = [a.shape for a in (x, y, sample_weight) if a is not None]
    if any(len(shape) == 0 for shape in shapes) or len({s[0] for s in shapes}) != 1:
        names = "x, y and sample_weight" if sample_weight is not None else "x and y"
        raise UsageError(
            f"{path}: {names} must have the same number of samples along their first "
            f"axis; got shapes {', '.join(str(s) for s in shapes)}."
        )
    if len(x) == 0:
        raise UsageError(f"{path}: x and y hold no samples.")
    return x, y, sample_weight


def _load_model(path):
    """The saved model, compiled when possible (for its loss), and why it is not.

    The optimizer is unused. Returns ``(model, reason)``: `reason` is None
    when the compiled state was restored.
    """
    import keras

    with warnings.catch_warnings():
        # Keras warns when the saved optimizer state does not match; it is not needed.
        warnings.simplefilter("ignore")
        try:
            return keras.models.load_model(path, compile=True), None
        except Exception as exc:
            reason = _one_line(exc, limit=150)
        try:
            return keras.models.load_model(path, compile=False), reason
        except Exception as exc:
            reason = _one_line(exc, limit=150)
            raise UsageError(f"{path}: cannot load a Keras model ({reason}).") from exc


def _loss_name(loss):
    """A short name of a loss (or nest of losses) for the report."""
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return {str(k): _loss_name(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [_loss_name(v) for v in loss]
    return getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)


def _world():
    """MPI.COMM_WORLD when launched on several ranks, else None (no MPI import)."""
    from . import _mpi

    if _mpi.launcher_size() <= 1:
        return None
    return _mpi.world()


def _spectrum(args):
    _check_arguments(args)
    x, y, sample_weight = _load_data(args.data)
    comm = _world()

    from . import _mpi

    root = _mpi.rank(comm) == 0
    # Only rank 0 writes; the ranks agree so that none starts the computation alone.
    problem = None
    if root:
        try:
            _prepare_folder(args.out)
        except UsageError as exc:
            problem = str(exc)
    _mpi.agree(problem is None, problem or "rank 0 cannot write to --out.", comm, UsageError)

    model, compile_problem = _load_model(args.model)
    if args.loss is None and not getattr(model, "compiled", False):
        if compile_problem is not None:
            raise UsageError(
                f"{args.model}: its compiled loss could not be restored ({compile_problem}); "
                "name one with --loss."
            )
        raise UsageError(f"{args.model}: the model was saved without a loss; name one with --loss.")

    import numpy as np

    from .eigen import eigsh
    from .hessian import Hessian
    from .linop import as_linop

    say = print if root else (lambda *a, **k: None)
    show = root and not args.quiet

    started = time.perf_counter()
    H = _build_hessian(Hessian, model, args, x, y, sample_weight, comm)
    A = as_linop(H)
    if args.k >= H.n:
        raise UsageError(f"-k must be smaller than the number of parameters, {H.n}; got {args.k}.")
    loss_value, gradient = H.value_and_gradient()
    loss_name = _loss_name(args.loss if args.loss is not None else getattr(model, "loss", None))
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
        message = _one_line(exc).replace("`batch_size`", "--batch-size")
        if args.loss is not None:
            message = message.replace("`loss`", "--loss")
        raise UsageError(f"{args.model} on {args.data}: {message}") from exc


def _write_spectrum(out, result, density):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
