"""The documentation: the Sphinx build is warning-free and every example runs.

Three subprocesses, started together and run concurrently:

- ``sphinx-build -W --keep-going -b html`` into a temporary folder: any
  warning (a broken cross-reference, a malformed docstring, a missing
  include) fails the build;
- pytest's doctest runner over the package's docstrings
  (``--doctest-modules src/tfhess_linop``) and over the ``>>>`` examples of
  the documentation pages (``--doctest-glob='*.rst' docs``), so that every
  example in the docs is executed and its output checked;
- the README's Python example.

Plus cheap checks that the API reference documents every public name and
that the README's commands are the ones CI runs.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "src" / "tfhess_linop"
TIMEOUT = 300

SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
DOCTEST_OPTIONS = ["--doctest-modules", "--doctest-glob=*.rst"]
DOCTEST_OPTIONS += ["-o", "doctest_optionflags=ELLIPSIS NORMALIZE_WHITESPACE"]

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")


def _environment():
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Headless: doctests that draw with matplotlib must not need a display.
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    }


class _Run:
    """A subprocess writing its output to a file, waited for on demand."""

    def __init__(self, command, log):
        self.command = command
        self.log = log
        self._stream = open(log, "w")  # closed in wait() or kill()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_environment(),
            stdout=self._stream,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait(self):
        try:
            returncode = self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.command[2]} did not finish in {TIMEOUT} s:\n{self.output()}")
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start the Sphinx build and the doctests side by side."""
    folder = tmp_path_factory.mktemp("docs")
    html = folder / "html"
    doctrees = str(folder / "doctrees")
    sphinx = _Run([*SPHINX, "-d", doctrees, str(DOCS), str(html)], folder / "sphinx.log")
    ignored = [f"--ignore={DOCS / name}" for name in ("conf.py", "_ext", "_build")]
    doctests = _Run(
        [*PYTEST, *DOCTEST_OPTIONS, *ignored, "--rootdir", str(ROOT), str(PACKAGE), str(DOCS)],
        folder / "doctests.log",
    )
    example = folder / "readme_example.py"
    example.write_text(_readme_example(), encoding="utf-8")
    readme = _Run([sys.executable, str(example)], folder / "readme_example.log")
    yield {"sphinx": sphinx, "doctests": doctests, "readme": readme, "html": html}
    for run in (sphinx, doctests, readme):
        run.kill()


def test_sphinx_build_has_no_warnings(runs):
    sphinx = runs["sphinx"]
    returncode = sphinx.wait()
    assert returncode == 0, f"sphinx-build -W failed:\n{sphinx.output()}"
    for page in (
        "index",
        "getting_started",
        "api",
        "numsa",
        "benchmarks",
        "cli",
        "user_guide/operator",
        "user_guide/mpi",
    ):
        assert (runs["html"] / f"{page}.html").is_file(), page


def test_docstring_and_page_examples_run(runs):
    doctests = runs["doctests"]
    returncode = doctests.wait()
    assert returncode == 0, f"doctests failed:\n{doctests.output()}"
    summary = doctests.output(limit=2000)
    assert re.search(r"\d+ passed", summary), summary


def test_api_reference_documents_every_public_name(runs):
    assert runs["sphinx"].wait() == 0, runs["sphinx"].output()
    import tfhess_linop

    page = (runs["html"] / "api.html").read_text(encoding="utf-8")
    # Documented at the top level or in the submodule that defines it.
    missing = [
        name
        for name in tfhess_linop.__all__
        if not re.search(rf'id="tfhess_linop\.(\w+\.)?{name}"', page)
    ]
    assert not missing, f"public names without an entry in docs/api.rst: {missing}"
    assert 'id="tfhess_linop.compat.numsa.Hessian"' in page


def _readme():
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_example():
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.DOTALL)
    assert blocks, "README.md has no ```python example"
    return blocks[0]


def test_readme_example_runs(runs):
    readme = runs["readme"]
    assert readme.wait() == 0, f"the README's example failed:\n{readme.output()}"
    assert re.search(r"n = \d+ parameters, largest-magnitude eigenvalue", readme.output())


def test_readme_test_command_is_what_ci_runs():
    command = (
        'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest'
    )
    assert command in _readme()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    normalised = re.sub(r"\s+-q\b", "", ci)
    assert command in normalised, "README's test command differs from .ci/run"


def test_readme_main_command_and_links():
    readme = _readme()
    assert (
        'python3 -m venv .venv && .venv/bin/pip install -e ".[mpi,plot]" '
        "&& .venv/bin/tfhess-linop demo"
    ) in readme
    for target in re.findall(r"\]\(((?:docs|examples|benchmarks)/[^)#\s]+)", readme):
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"
