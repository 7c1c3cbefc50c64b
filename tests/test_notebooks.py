"""Execute every notebook under notebooks/ headless (nbclient, kernel python3) with tiny settings.

``METRICLEARN_NOTEBOOK_SMALL=1`` makes each notebook use small data / few epochs; the working directory
is ``notebooks/`` as when a user opens them. Notebooks must be stored without outputs.
"""

import glob
import os

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
# notebooks that train deep models even in small mode (> ~30 s on a loaded 2-core machine)
SLOW = {
    "04_contrastive_distance_curves.ipynb",
    "05_mining_strategies.ipynb",
    "06_retrieval_digits.ipynb",
}
EXPECTED = {
    "01_distances_and_axioms.ipynb",
    "02_iris_nca.ipynb",
    "03_convex_learners.ipynb",
    "04_contrastive_distance_curves.ipynb",
    "05_mining_strategies.ipynb",
    "06_retrieval_digits.ipynb",
}


def test_all_notebooks_present_and_clean():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert EXPECTED <= names, sorted(EXPECTED - names)
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        assert book.cells[0].cell_type == "markdown", path  # starts with its title and purpose
        for cell in book.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (path, cell.source[:60])
        assert any("METRICLEARN_NOTEBOOK_SMALL" in c.source for c in book.cells), path


def _params():
    for path in NOTEBOOKS:
        name = os.path.basename(path)
        marks = [pytest.mark.slow] if name in SLOW else []
        yield pytest.param(path, id=name, marks=marks)


@pytest.mark.parametrize("path", list(_params()))
def test_notebook_runs(path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("METRICLEARN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book,
        timeout=180,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": NOTEBOOK_DIR}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "stream" and "small settings" in o.get("text", "") for o in outputs)
