"""Sphinx configuration for the tfhess_linop documentation.

Build (warnings are errors, no network needed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build runs every example of the gallery (two at a time; set
``TFHESS_LINOP_GALLERY_JOBS`` to change that, ``CI=true`` for their small
sizes) and the notebook. ``-D plot_gallery=0`` shows the examples without
running them; a rebuild reruns only the examples that changed.
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

import gallery_hooks  # noqa: E402  (from _ext, after the path is set)
import intersphinx_offline  # noqa: E402

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
    # MathJax served from the build itself, not from a CDN: pages render offline.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "numpydoc",
    "markdown_include",
    "sphinx_gallery.gen_gallery",
    "myst_nb",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb"]
templates_path = []
# `name` in a docstring is a cross-reference when it names an object, and is
# shown as code otherwise (parameter names).
default_role = "py:obj"
pygments_style = "sphinx"

# -- autodoc / numpydoc ------------------------------------------------------
autodoc_typehints = "none"  # types are in the numpydoc "Parameters" sections
autodoc_member_order = "bysource"
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

# -- the gallery ---------------------------------------------------------------
# Every script in examples/ is a sphinx-gallery example: a docstring with a
# title, then ``# %%`` cells. The build runs each once (two at a time), shows
# its printed output and its figures, and fails if one fails; the examples'
# test reads the results of that same run (the JUnit report and the pages)
# instead of running the scripts again. With ``CI=true`` the examples use
# their small sizes.
sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"\.py$",  # run every example, not only plot_*.py
    "within_subsection_order": "gallery_hooks.teaching_order",
    "reset_argv": "gallery_hooks.reset_argv",
    "reset_modules": ("matplotlib", "gallery_hooks.reset_keras"),
    "reset_modules_order": "before",
    "parallel": int(os.environ.get("TFHESS_LINOP_GALLERY_JOBS", "2")),
    "junit": "gallery-junit.xml",
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "show_memory": False,
    "capture_repr": (),
    "image_srcset": [],
    "thumbnail_size": (320, 224),
}
gallery_hooks.out_root()  # before the worker processes start: they share it

# -- the notebook ----------------------------------------------------------------
# examples/notebooks/hessian_tour.ipynb, linked into notebooks/, is stored
# without outputs; myst-nb executes it once per build (a cell's failed
# assertion fails the build) and shows its outputs. The notebook's test reads
# the executed copy this build writes (jupyter_execute/).
# The kernel draws with its inline backend, so a headless MPLBACKEND=Agg (the
# gallery forces Agg on its own) must not reach it.
os.environ.pop("MPLBACKEND", None)
nb_execution_mode = "force"
nb_execution_timeout = 180
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# TensorFlow's C++ runtime writes its start-up lines to the kernel's stderr.
nb_output_stderr = "remove"
myst_enable_extensions = ["dollarmath"]

# -- HTML --------------------------------------------------------------------
# SciPy's and NumPy's theme. Nothing is loaded from elsewhere at build time.
html_theme = "pydata_sphinx_theme"
html_title = f"tfhess_linop {release}"
html_theme_options = {
    "logo": {"text": f"tfhess_linop {version}"},
    "navbar_align": "left",
    "header_links_before_dropdown": 4,
    "navbar_persistent": ["search-button"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
# No empty "Section Navigation" column on pages without sub-pages.
html_sidebars = {
    page: []
    for page in (
        "index",
        "getting_started",
        "auto_examples/index",
        "notebooks/hessian_tour",
        "cli",
        "numsa",
        "benchmarks",
        "api",
    )
}
html_static_path = ["_static"]
html_css_files = ["tfhess_linop.css"]
html_show_sourcelink = False
