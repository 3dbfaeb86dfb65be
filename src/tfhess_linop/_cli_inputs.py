"""The command's input checks: arguments, files and folders, before any work.

Everything here answers without importing TensorFlow, except `load_model`
(Keras), which runs once the cheap checks have passed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings

__all__ = [
    "UsageError",
    "check_arguments",
    "describe_loss",
    "load_data",
    "load_model",
    "one_line",
    "prepare_folder",
]


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


def one_line(exc, limit=300):
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


def prepare_folder(folder, option="--out"):
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


_MODEL_FORMATS = ".keras archive (model.save('model.keras')) or an HDF5 .h5 file"


def check_arguments(args):
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
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--plot needs matplotlib, which is not installed (pip install matplotlib)."
        )
    check_model_file(args.model)


def check_model_file(path):
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


def load_data(path):
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


def load_model(path):
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
            reason = one_line(exc, limit=150)
        try:
            return keras.models.load_model(path, compile=False), reason
        except Exception as exc:
            reason = one_line(exc, limit=150)
            raise UsageError(f"{path}: cannot load a Keras model ({reason}).") from exc


def describe_loss(loss):
    """A short name of a loss (or nest of losses) for the report."""
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return {str(k): describe_loss(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [describe_loss(v) for v in loss]
    return getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)
