"""docs/examples/tour.ipynb runs, cell by cell, with nbclient: the notebook never goes stale."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "examples" / "tour.ipynb"


@pytest.mark.slow
@pytest.mark.e2e
def test_the_tour_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    monkeypatch.setenv("SSL_BENCH_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "oracle" in text and (tmp_path / "positives_fs.png").stat().st_size > 10_000
    assert (tmp_path / "backbone.safetensors").is_file()
    assert "'crop_pct': 1.0" in text and "0.229" not in text  # timm's data config is the run's, not ImageNet's
    assert not list(NOTEBOOK.parent.glob("notebook_runs"))  # nothing written beside the notebook
