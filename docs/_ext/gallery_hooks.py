"""What sphinx-gallery calls around each example (named by string in conf.py).

The examples are plain scripts with a ``--out DIR`` option for their
figures. The gallery runs them in its own processes, one after another in
each, so every example gets its own output folder and starts from Keras'
default state: an example that sets ``keras.config.set_floatx("float64")``
must not change the next one's models.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Where the examples' ``--out`` folders go; a test build points it at its
#: temporary folder, a manual build gets a fresh temporary one.
OUT_VARIABLE = "TFHESS_LINOP_GALLERY_OUT"


def out_root() -> Path:
    """The folder under which every example writes its ``--out`` figures."""
    if OUT_VARIABLE not in os.environ:
        os.environ[OUT_VARIABLE] = tempfile.mkdtemp(prefix="tfhess-linop-gallery-")
    return Path(os.environ[OUT_VARIABLE])


def reset_argv(gallery_conf, script_vars):
    """Command-line arguments of an example: its own ``--out`` folder."""
    name = Path(script_vars["src_file"]).stem
    return ["--out", str(out_root() / name)]


def reset_keras(gallery_conf, fname):
    """Keras' global state as a fresh process has it."""
    import keras

    keras.config.set_floatx("float32")
    keras.backend.clear_session()


#: The seed notebook's story first; every other example after, by name.
TEACHING_ORDER = (
    "cubic_taylor",
    "xor_hessian",
    "randomized_svd",
    "solvers_negative_curvature",
    "newton_training",
    "spectral_density",
)


def teaching_order(filename):
    """Sort key of an example file: the seed's story, then alphabetical."""
    name = Path(filename).stem
    rank = TEACHING_ORDER.index(name) if name in TEACHING_ORDER else len(TEACHING_ORDER)
    return rank, name
