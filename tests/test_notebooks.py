"""Both notebooks run top to bottom on the smoke preset (as in CI), headless, with nbclient.

They run on a copy of conftest's finished smoke grid, as a notebook does after ``reproduce``: their
training cell reuses every finished run (training itself is tested by the grid fixture)."""
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from src.report.style import FIGURES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec pointing at this interpreter, so the notebooks see the same packages."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(prefix=str(prefix), kernel_name="aevae-test")
    return prefix / "share" / "jupyter"


@pytest.mark.parametrize("name", ["AE.ipynb", "VAE.ipynb"])
def test_notebook_runs_on_smoke_preset(name, kernel, smoke_grid, smoke_copy, monkeypatch):
    runs_dir = smoke_copy / "runs"
    monkeypatch.setenv("JUPYTER_PATH", str(kernel))
    monkeypatch.setenv("AEVAE_PRESET", "smoke")
    monkeypatch.setenv("AEVAE_DATA", str(smoke_grid / "faces"))
    monkeypatch.setenv("AEVAE_OUT", str(runs_dir))
    monkeypatch.setenv("AEVAE_DEVICE", "cpu")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must use its inline backend
    nb = nbformat.read(ROOT / name, as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", []), "the first code cell is the parameters cell"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} is stored with outputs"
    NotebookClient(nb, kernel_name="aevae-test", timeout=600,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    model = "ae" if name == "AE.ipynb" else "vae"
    runs = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name.startswith(model + "-"))
    assert len(runs) == 8 and all((runs_dir / r / "metrics.json").exists() for r in runs)
    figures = FIGURES[model]
    assert all((runs_dir / "Figures" / f).exists() for f in (figures["recon"], figures["noise"], *figures["loss"]))
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # samples, loss curves, reconstructions, noisy inputs
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors and sys.executable
