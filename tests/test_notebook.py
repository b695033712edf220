"""notebooks/quickstart.ipynb executes from top to bottom and shows what it promises."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_notebook_executes(tmp_path, monkeypatch, mnist_zoo):
    # The notebook loads the zoo the suite already trained (the mnist_zoo fixture's folder, with or
    # without pytest's cache) instead of training its own.
    monkeypatch.setenv("JAXPROV_ZOO_CACHE", str(mnist_zoo["root"]))
    monkeypatch.setenv("JAXPROV_NOTEBOOK_DIR", str(tmp_path))
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "arch:        lenet" in outputs
    # 4 null models: the best p is 1/5, too coarse for alpha 0.05 over two methods, and it says so
    # named methods: the per-method tests answer (the default verdict is not computed)
    assert "verdict (per-method tests): inconclusive" in outputs and "smallest p-value is 0.2; at least 39" in outputs
    assert "report.html" in outputs and "heatmap-ddv.png" in outputs
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the heatmap cell produced no figure"
