"""Both notebooks run top to bottom on the smoke preset (as in CI), headless, with nbclient.

They run on copies of conftest's finished smoke grid, as a notebook does after ``reproduce``: their
training cell reuses every finished run (training itself is tested by the grid fixture)."""
import asyncio
import os
import shutil
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


def test_both_notebooks_run_on_smoke_preset(kernel, smoke_grid, tmp_path, monkeypatch):
    """Each notebook in its own kernel on its own copy of the grid; the two run at the same time (a kernel
    spends most of its time in one thread, importing and drawing)."""
    monkeypatch.setenv("JUPYTER_PATH", str(kernel))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernels must use their inline backend
    notebooks, clients = {}, []
    for name in ("AE.ipynb", "VAE.ipynb"):
        runs_dir = tmp_path / name / "runs"
        shutil.copytree(smoke_grid / "runs", runs_dir, ignore=shutil.ignore_patterns(".lock"))
        nb = nbformat.read(ROOT / name, as_version=4)
        assert "parameters" in nb.cells[1].metadata.get("tags", []), "the first code cell is the parameters cell"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} is stored with outputs"
        env = {**os.environ, "AEVAE_PRESET": "smoke", "AEVAE_DATA": str(smoke_grid / "faces"),
               "AEVAE_OUT": str(runs_dir), "AEVAE_DEVICE": "cpu"}
        client = NotebookClient(nb, kernel_name="aevae-test", timeout=600, resources={"metadata": {"path": str(ROOT)}})
        clients.append(client.async_execute(env=env))
        notebooks[name] = (nb, runs_dir)

    async def run_all():
        await asyncio.gather(*clients)

    asyncio.run(run_all())
    for name, (nb, runs_dir) in notebooks.items():
        model = "ae" if name == "AE.ipynb" else "vae"
        runs = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name.startswith(model + "-"))
        assert len(runs) == 8 and all((runs_dir / r / "metrics.json").exists() for r in runs)
        figures = FIGURES[model]
        assert all((runs_dir / "Figures" / f).exists() for f in (figures["recon"], figures["noise"], *figures["loss"]))
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
        assert len(images) >= 4, name  # samples, loss curves, reconstructions, noisy inputs
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, (name, errors)
