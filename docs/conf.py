"""Sphinx configuration for the tfhess_linop documentation.

Build (warnings are errors, no network needed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
# Build from a plain checkout too; an installed (editable) package works the same.
sys.path.insert(0, str(DOCS.parent / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import intersphinx_offline  # noqa: E402  (from _ext, after the path is set)

import tfhess_linop  # noqa: E402

project = "tfhess_linop"
author = "the tfhess_linop developers"
copyright = "2026, " + author
release = tfhess_linop.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.extlinks",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "markdown_include",
]

exclude_patterns = ["_build"]
templates_path = []
# `name` in a docstring is a cross-reference when it names an object, and is
# shown as code otherwise (parameter names).
default_role = "py:obj"
pygments_style = "sphinx"

# -- autodoc / numpydoc ------------------------------------------------------
autodoc_typehints = "none"  # types are in the numpydoc "Parameters" sections
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
autosummary_generate = False  # the API pages are written out, nothing generated
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Link the types named in "Parameters"/"Returns" (only these names; other
# words of a type description stay plain text).
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"
numpydoc_xref_aliases = {
    "ndarray": "numpy.ndarray",
    "LinearOperator": "scipy.sparse.linalg.LinearOperator",
    "Generator": "numpy.random.Generator",
    "numpy.random.Generator": "numpy.random.Generator",
    "tf.Variable": "tf.Variable",
    "tf.Tensor": "tf.Tensor",
    "keras.Variable": "keras.Variable",
    "keras.Model": "keras.Model",
    "keras.losses.Loss": "keras.losses.Loss",
    "Hessian": "tfhess_linop.Hessian",
    "HessianOperator": "tfhess_linop.HessianOperator",
    "SolveResult": "tfhess_linop.SolveResult",
    "NegativeCurvature": "tfhess_linop.NegativeCurvature",
    "TraceEstimate": "tfhess_linop.TraceEstimate",
    "DiagonalEstimate": "tfhess_linop.DiagonalEstimate",
    "SpectralDensity": "tfhess_linop.SpectralDensity",
    "NewtonStep": "tfhess_linop.newton.NewtonStep",
    "NewtonHistory": "tfhess_linop.newton.NewtonHistory",
    "NystromPreconditioner": "tfhess_linop.solve.NystromPreconditioner",
    "TaylorTestResult": "tfhess_linop.testing.TaylorTestResult",
    "tfhess_linop.Hessian": "tfhess_linop.Hessian",
    "tfhess_linop.SolveResult": "tfhess_linop.SolveResult",
}

# :doi:`10.1137/...` and :arxiv:`2301.07825` in docstrings' reference lists.
extlinks = {
    "doi": ("https://doi.org/%s", "doi:%s"),
    "arxiv": ("https://arxiv.org/abs/%s", "arXiv:%s"),
}

# -- intersphinx -------------------------------------------------------------
# Links to NumPy, SciPy, TensorFlow, Keras and Python. The build must work
# offline, so each project reads a small inventory shipped in docs/_intersphinx
# (plain text, compiled to objects.inv format at build time) that lists the
# objects these pages refer to. With TFHESS_LINOP_DOCS_ONLINE=1 the projects'
# full published inventories are fetched first and the local ones are only the
# fallback. TensorFlow publishes no inventory of its own; the community one
# below covers its Python API.
intersphinx_mapping = intersphinx_offline.mapping(
    {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
        "tensorflow": (
            "https://www.tensorflow.org/api_docs/python",
            "https://github.com/GPflow/tensorflow-intersphinx/raw/master/tf2_py_objects.inv",
        ),
        "keras": ("https://keras.io/api", None),
    },
    source=DOCS / "_intersphinx",
    build=DOCS / "_build" / "intersphinx",
    online=os.environ.get("TFHESS_LINOP_DOCS_ONLINE") == "1",
)
intersphinx_timeout = 10

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"tfhess_linop {release}"
html_theme_options = {
    "description": "The Hessian of a TensorFlow/Keras loss as a SciPy LinearOperator",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_static_path = []
