"""Every script in ``examples/`` runs, checks its own numbers and shows its figures.

The scripts assert their results against dense references themselves. They
run once, in the documentation build's gallery (``_docs_build.py``: with
``CI=true``, two at a time, each with ``--out`` a folder of its own); these
tests read that run instead of starting the scripts again:

- the gallery's JUnit report: the script ran to its end (a failed
  assertion is a failure there, with its traceback);
- its page: the printed output and every figure the script drew, the image
  files present in the build, none empty;
- its ``--out`` folder: the PNGs a user running the script gets.

``mpi_spectrum.py`` runs in the gallery on one process, and here once more
under ``mpiexec -n 2``: that run is the check that ranks agree.
"""

import re
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from _docs_build import BUILD_TIMEOUT, Run, docs_build

# The first test to need the shared documentation build waits for all of it.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 120)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))
MPI_SCRIPTS = {"mpi_spectrum.py"}
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
TIMEOUT = 300


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """The documentation build's gallery, and the MPI example under two ranks beside it."""
    build = docs_build(tmp_path_factory)
    folder = tmp_path_factory.mktemp("mpi_examples")
    mpi = {}
    if MPIEXEC:
        for name in sorted(MPI_SCRIPTS):
            command = [MPIEXEC, "-n", "2", sys.executable, str(EXAMPLES / name)]
            out = folder / name.removesuffix(".py")
            mpi[name] = (out, Run([*command, "--out", str(out)], folder / f"{name}.log"))
    build.wait()
    report = build.html / "gallery-junit.xml"
    assert report.is_file(), f"the gallery wrote no JUnit report:\n{build.sphinx.output()}"
    cases = {
        Path(case.get("file") or case.get("name")).name: case
        for case in ElementTree.parse(report).getroot().iter("testcase")
    }
    yield {"build": build, "cases": cases, "mpi": mpi}
    for _, run in mpi.values():
        run.kill()


def test_the_examples_are_all_here():
    expected = {
        "cubic_taylor.py",
        "xor_hessian.py",
        "randomized_svd.py",
        "solvers_negative_curvature.py",
        "newton_training.py",
        "spectral_density.py",
        "mpi_spectrum.py",
    }
    assert expected <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_is_a_gallery_script(name):
    """A title for its page, then cells: what sphinx-gallery needs to show it well."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    title = re.match(r'"""(.+)\n(=+)\n', text)
    assert title and len(title[2]) == len(title[1]), f"{name}: no RST title in the docstring"
    assert text.count("\n# %%\n") >= 1, f"{name} has no '# %%' cells"


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_and_shows_its_figures(gallery, name):
    case = gallery["cases"].get(name)
    build = gallery["build"]
    assert case is not None, f"the gallery did not run {name}:\n{build.sphinx.output()}"
    problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
    assert not problems, f"{name} failed in the gallery:\n" + "\n".join(
        f"{problem.get('message', '')}\n{problem.text or ''}"[-6000:] for problem in problems
    )
    stem = name.removesuffix(".py")
    page = (build.html / "auto_examples" / f"{stem}.html").read_text(encoding="utf-8")
    assert "sphx-glr-script-out" in page, f"{name}'s page shows no printed output"
    assert "Traceback" not in page
    images = sorted(set(re.findall(rf'src="\.\./(_images/sphx_glr_{stem}_\d+\.png)"', page)))
    assert images, f"{name}'s page shows no figure"
    for image in images:
        assert (build.html / image).stat().st_size > 10_000, f"{image} is empty"
    saved = list((build.examples_out / stem).glob("*.png"))
    assert saved, f"{name} wrote no PNG to its --out folder"
    assert all(figure.stat().st_size > 10_000 for figure in saved)


@pytest.mark.parametrize("name", sorted(MPI_SCRIPTS))
def test_mpi_example_under_two_ranks(gallery, name):
    if name not in gallery["mpi"]:
        pytest.skip("mpiexec not found")
    out, run = gallery["mpi"][name]
    status = run.wait()
    assert status == 0, f"{name} failed under mpiexec -n 2 ({status}):\n{run.output()[-4000:]}"
    assert "2 rank(s)" in run.output()
    figures = list(out.glob("*.png"))
    assert figures and all(figure.stat().st_size > 10_000 for figure in figures)
    assert "Traceback" not in run.output()
