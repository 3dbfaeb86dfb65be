"""The documentation: the Sphinx build is warning-free and every example runs.

Three subprocesses, started together and run concurrently:

- ``sphinx-build -W --keep-going -b html`` of a copy of the docs into a
  temporary folder (``_docs_build.py``; the examples' and the notebook's
  tests read the same build): any warning (a broken cross-reference, a
  malformed docstring, a missing include), a failing gallery example or a
  failing notebook cell fails the build;
- pytest's doctest runner over the package's docstrings
  (``--doctest-modules src/tfhess_linop``) and over the ``>>>`` examples of
  the documentation pages (``--doctest-glob='*.rst' docs``), so that every
  example in the docs is executed and its output checked;
- the README's Python example.

Plus cheap checks that the API reference documents every public name, that
the gallery's index shows every example, and that the README's commands are
the ones CI runs.
"""

import re
import sys
from pathlib import Path

import pytest

from _docs_build import BUILD_TIMEOUT, Run, docs_build

# The first test to need the shared documentation build waits for all of it.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 120)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "src" / "tfhess_linop"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
DOCTEST_OPTIONS = ["--doctest-modules", "--doctest-glob=*.rst"]
DOCTEST_OPTIONS += ["-o", "doctest_optionflags=ELLIPSIS NORMALIZE_WHITESPACE"]

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start the Sphinx build (shared with the examples' tests) and the doctests side by side."""
    build = docs_build(tmp_path_factory)
    folder = tmp_path_factory.mktemp("doctests")
    ignored = [f"--ignore={DOCS / name}" for name in ("conf.py", "_ext", "_build", "auto_examples")]
    doctests = Run(
        [*PYTEST, *DOCTEST_OPTIONS, *ignored, "--rootdir", str(ROOT), str(PACKAGE), str(DOCS)],
        folder / "doctests.log",
    )
    example = folder / "readme_example.py"
    example.write_text(_readme_example(), encoding="utf-8")
    readme = Run([sys.executable, str(example)], folder / "readme_example.log")
    yield {"sphinx": build.sphinx, "doctests": doctests, "readme": readme, "html": build.html}
    for run in (doctests, readme):
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
        "auto_examples/index",
        "notebooks/hessian_tour",
    ):
        assert (runs["html"] / f"{page}.html").is_file(), page


def test_docstring_and_page_examples_run(runs):
    doctests = runs["doctests"]
    returncode = doctests.wait()
    assert returncode == 0, f"doctests failed:\n{doctests.output()}"
    summary = doctests.output(limit=2000)
    assert re.search(r"\d+ passed", summary), summary


def _built_page(runs, page):
    """A page of the build; a failed build is reported by the test above, not here."""
    runs["sphinx"].wait()
    path = runs["html"] / page
    assert path.is_file(), f"the build wrote no {page}:\n{runs['sphinx'].output()}"
    return path.read_text(encoding="utf-8")


def test_api_reference_documents_every_public_name(runs):
    import tfhess_linop

    page = _built_page(runs, "api.html")
    # Documented at the top level or in the submodule that defines it.
    missing = [
        name
        for name in tfhess_linop.__all__
        if not re.search(rf'id="tfhess_linop\.(\w+\.)?{name}"', page)
    ]
    assert not missing, f"public names without an entry in docs/api.rst: {missing}"
    assert 'id="tfhess_linop.compat.numsa.Hessian"' in page
    # Every member listed under a class in docs/api.rst has its entry (an
    # autodoc default once silently dropped all of them but Hessian's).
    listed = re.findall(
        r"^\.\. autoclass:: ([\w.]+).*\n   :members: ([^\n]+(?:\n {6,}[^\n]+)*)",
        (DOCS / "api.rst").read_text(),
        flags=re.MULTILINE,
    )
    assert len(listed) >= 10

    def rendered(cls, member):
        if cls.startswith("tfhess_linop."):
            return f'id="{cls}.{member}"' in page
        return re.search(rf'id="tfhess_linop\.(\w+\.)?{cls}\.{member}"', page) is not None

    absent = [
        f"{cls}.{member}"
        for cls, members in listed
        for member in re.split(r"[,\s]+", members.strip())
        if member and not rendered(cls, member)
    ]
    assert not absent, f"members listed in docs/api.rst but not rendered: {absent}"


def test_gallery_index_shows_every_example(runs):
    html = runs["html"]
    index = _built_page(runs, "auto_examples/index.html")
    for script in sorted((ROOT / "examples").glob("*.py")):
        name = script.stem
        assert f'href="{name}.html' in index, f"the gallery does not list {name}"
        thumbnail = f"_images/sphx_glr_{name}_thumb.png"
        assert thumbnail in index, f"no thumbnail for {name}"
        assert (html / thumbnail).stat().st_size > 5_000, f"{name}'s thumbnail is empty"
    front = _built_page(runs, "index.html")
    assert 'href="auto_examples/index.html"' in front
    assert 'href="notebooks/hessian_tour.html"' in front


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
