"""One documentation build per test session, shared by the tests that read it.

The Sphinx build runs every example of the gallery (sphinx-gallery) and the
notebook (myst-nb) once. ``test_docs.py`` checks the build itself,
``test_examples.py`` each example's run in it (the gallery's JUnit report,
its pages, figures and printed output) and ``test_notebook.py`` the executed
notebook it wrote: no script or notebook is run a second time.

The build reads a copy of ``docs/`` and ``examples/`` in a temporary folder,
so that it starts from nothing (sphinx-gallery skips examples whose pages a
previous build left in ``docs/auto_examples``) and writes nothing into the
checkout. The examples run with ``CI=true`` (their small sizes), two at a
time with one TensorFlow thread each.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Seconds the build may take (it runs about 10 examples and a notebook).
BUILD_TIMEOUT = 1200
SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
GENERATED = ("_build", "auto_examples", "sg_execution_times.rst", "jupyter_execute")


def environment(**extra):
    """The environment of every subprocess these tests start."""
    return {
        **os.environ,
        "CI": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        # Headless: whatever draws with matplotlib must not need a display.
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Run:
    """A subprocess writing its output to a file, waited for on demand."""

    def __init__(self, command, log, *, env=None, timeout=300):
        self.command = command
        self.log = log
        self.timeout = timeout
        self._stream = open(log, "w")  # closed in wait() or kill()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env or environment(),
            stdout=self._stream,
            stderr=subprocess.STDOUT,
            text=True,
        )
        atexit.register(self.kill)

    def wait(self):
        try:
            returncode = self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.command[:4]} did not finish in {self.timeout} s:\n{self.output()}")
        self._stream.close()
        return returncode

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stream.close()

    def output(self, limit=12000):
        text = self.log.read_text(errors="replace")
        # TensorFlow's start-up chatter says nothing about the docs.
        lines = [
            line
            for line in text.splitlines()
            if not re.match(r"^(I0000|E0000|W0000|WARNING: All log messages)", line)
        ]
        return "\n".join(lines)[-limit:]


class DocsBuild:
    """The HTML build of a fresh copy of the documentation, started at once."""

    def __init__(self, folder):
        self.folder = folder
        source = folder / "source"
        ignore = shutil.ignore_patterns(*GENERATED, "__pycache__", ".ipynb_checkpoints")
        shutil.copytree(ROOT / "docs", source / "docs", symlinks=True, ignore=ignore)
        shutil.copytree(ROOT / "examples", source / "examples", ignore=ignore)
        # The benchmark reports that docs/benchmarks.rst includes.
        (source / "benchmarks").mkdir()
        for report in (ROOT / "benchmarks").glob("*.md"):
            shutil.copy2(report, source / "benchmarks")
        self.source = source / "docs"
        self.html = folder / "html"
        #: Where each example's ``--out`` figures go: ``gallery_out/<name>/``.
        self.examples_out = folder / "gallery_out"
        self.sphinx = Run(
            [*SPHINX, "-d", str(folder / "doctrees"), str(self.source), str(self.html)],
            folder / "sphinx.log",
            env=environment(TFHESS_LINOP_GALLERY_OUT=str(self.examples_out)),
            timeout=BUILD_TIMEOUT,
        )

    def wait(self):
        """The build's exit status, once it has finished."""
        return self.sphinx.wait()


_BUILD = None


def docs_build(tmp_path_factory):
    """The session's documentation build (started by the first caller)."""
    global _BUILD
    if _BUILD is None:
        _BUILD = DocsBuild(tmp_path_factory.mktemp("docs"))
    return _BUILD
