"""The analysis notebooks (jupytext percent scripts) run end to end on a small demo run.

Each script is converted with jupytext and executed with nbclient in a Jupyter kernel of this
interpreter (a kernelspec written to a temporary JUPYTER_PATH, so no global kernel registration is needed).
"""
import json
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["analysis/diagnostics.py", "analysis/selection_report.py"]
KERNEL = "pyro-dps-test"


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> Path:
    """A kernelspec for this interpreter, so the notebooks run with the package under test."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pyro-dps test", "language": "python"}))
    return root


@pytest.mark.parametrize("script", NOTEBOOKS)
def test_notebook_runs(script, run_dir, kernel_path, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("PYRO_DPS_RUN", str(run_dir))
    monkeypatch.setenv("PYRO_DPS_SELECTION_CSV", str(tmp_path / "selection.csv"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = jupytext.read(ROOT / script)
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=180,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    if script.endswith("diagnostics.py"):
        assert len(images) >= 4  # R-hat/ESS histograms, trace, rank, weights by group
        assert "weights with R-hat < 1.05" in text and "ArviZ line" in text
    else:
        assert len(images) >= 1
        assert (tmp_path / "selection.csv").read_text().startswith("example,label,clean,mean")
        assert "uncertain examples" in text
