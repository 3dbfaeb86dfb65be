"""``examples/notebooks/hessian_tour.ipynb`` runs, its assertions hold, the docs show it.

The notebook is stored without outputs. The documentation build
(``_docs_build.py``) executes it once, with myst-nb (nbclient and an
IPython kernel), and fails if a cell raises; these tests read the executed
copy that build wrote and the page it rendered, instead of running the
notebook a second time.
"""

import re
from pathlib import Path

import pytest

from _docs_build import BUILD_TIMEOUT, docs_build

# The first test to need the shared documentation build waits for all of it.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 120)

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebooks" / "hessian_tour.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The executed notebook and the rendered page of the session's docs build."""
    build = docs_build(tmp_path_factory)
    status = build.wait()
    copies = sorted(build.folder.glob("**/jupyter_execute/**/hessian_tour.ipynb"))
    assert copies, f"the docs build executed no notebook ({status}):\n{build.sphinx.output()}"
    page = (build.html / "notebooks" / "hessian_tour.html").read_text(encoding="utf-8")
    return nbformat.read(copies[0], as_version=4), page, build.html


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in _code_cells(notebook):
        assert not cell.outputs and cell.execution_count is None, cell.source[:200]


def test_every_claim_is_checked():
    """Each code cell after the imports asserts what its text says."""
    cells = _code_cells(nbformat.read(NOTEBOOK, as_version=4))
    assert len(cells) >= 8
    unchecked = [cell.source[:120] for cell in cells[1:] if "assert" not in cell.source]
    assert not unchecked, f"cells without an assertion: {unchecked}"
    story = "\n".join(cell.source for cell in cells)
    for call in (
        "thl.taylor_test",
        "Hessian.from_keras",
        "H.dense()",
        "H.hvp",
        "np.linalg.svd",
        "thl.randomized_svd",
        "thl.pcg",
        "negative_curvature",
        "NewtonCG",
    ):
        assert call in story, f"the notebook's story lacks {call}"


def test_executes_and_its_assertions_pass(executed):
    notebook, _, _ = executed
    cells = _code_cells(notebook)
    errors = [output for cell in cells for output in cell.outputs if output.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    assert all(cell.execution_count is not None for cell in cells)
    text = "\n".join(
        output.get("text", "")
        for cell in cells
        for output in cell.outputs
        if output.output_type == "stream"
    )
    assert "largest 30.000000000000, smallest -6.000000000000" in text
    assert re.search(r"observed order 3\.0", text), text[:2000]
    figures = [
        output for cell in cells for output in cell.outputs if "image/png" in output.get("data", {})
    ]
    assert len(figures) >= 4, "the Taylor, heat map, SVD and training figures"


def test_docs_page_shows_the_outputs(executed):
    _, page, html = executed
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert len(images) >= 4, "the rendered notebook shows no figures"
    for image in images:
        assert (html / "notebooks" / image).resolve().stat().st_size > 5_000, image
    assert "observed order 3.0" in page
    assert "Traceback" not in page
