"""figure_data.npz: the images the report's figures show, computed once from the weights.

``write_figure_data(OUT)`` runs after evaluation (``reproduce``, ``analyze``, ``report``);
``results.read_figure_data`` reads it back. With it the report draws every figure without
torch or a checkpoint, so figures can be redrawn from a weight-free results bundle. Every
image is uint8 (S, S), in the order the figures show them::

    test                      (N_SHOW, S, S) the first test images of the grid's stored split
    noisy                     the same images with the evaluation noise of the grid's sigma (lowest seed)
    recon/<run>/clean         their reconstruction by each grid cell's run (lowest seed)
    recon/<run>/noisy         the reconstruction of ``noisy``
    vae/prior                 (2 N_SHOW, S, S) decoded draws z ~ N(0, I) of one VAE run
    vae/latent, vae/pixels    (N_SHOW + 2, S, S) two test faces interpolated in latent (mu) and pixel space
    vae/sampled               decode(sampled z) of ``test``, the draws of the ``sampled_z`` metrics
    index                     JSON: n_show, sigma, noisy condition, seed, vae_run, t, fingerprint
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import noise
from .data import EVAL_BATCH, to_float
from .evaluation import decode_sampled, load_run, reconstruct, sampled_z_generator
from .results import FIGURE_DATA, load_summary, noise_sigma, run_data, runs_by_cell
from .utils import save_npz

N_SHOW = 6  # test images shown in every grid (the first N of the test split)
VERSION = 1  # bump when the arrays change, so older files are recomputed


def _u8(x: torch.Tensor) -> np.ndarray:
    """(B, 1, S, S) float in [0, 1] -> (B, S, S) uint8: what a PNG of the figure can show anyway."""
    return (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _vae_run(cells: dict[tuple, str]) -> str | None:
    return cells.get(("vae", "none", 0.0)) or next((v for k, v in cells.items() if k[0] == "vae"), None)


def _fingerprint(runs_dir: Path, cells: dict[tuple, str], sigma: float) -> dict[str, Any]:
    """What the arrays depend on: each shown run's best weights (size, mtime), sigma, N_SHOW, format."""
    best = {run: runs_dir / run / "best.pt" for run in sorted(cells.values())}
    return json.loads(json.dumps({"version": VERSION, "n_show": N_SHOW, "sigma": sigma, "runs": {
        run: [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None for run, p in best.items()}}))


def _current(path: Path, fingerprint: dict[str, Any]) -> bool:
    """True when ``path`` holds figure data of this fingerprint, or of weights no longer here
    (a weight-free results bundle keeps the figure data it came with)."""
    if not path.exists():
        return False
    if all(v is None for v in fingerprint["runs"].values()):
        return True
    with np.load(path) as z:
        return json.loads(str(z["index"])).get("fingerprint") == fingerprint


@torch.no_grad()
def _generator_arrays(run_dir: Path, x: torch.Tensor) -> tuple[dict[str, np.ndarray], list[float]]:
    """Prior samples, interpolation and decode(sampled z) of a VAE run; x: (B, 1, S, S), the first batch."""
    model, cfg = load_run(run_dir)
    t = torch.linspace(0, 1, N_SHOW + 2)[:, None]  # (K, 1)
    mu = model.encode(x[:2])[0]  # (2, L)
    pixels = (1 - t[:, :, None, None]) * x[0] + t[:, :, None, None] * x[1]  # (K, 1, S, S)
    sampled = decode_sampled(model, x, sampled_z_generator(cfg.train.seed))  # whole batch: the metrics' draws
    arrays = {"vae/prior": _u8(model.sample(2 * N_SHOW, generator=torch.Generator().manual_seed(0))),
              "vae/latent": _u8(model.decode((1 - t) * mu[0] + t * mu[1])), "vae/pixels": _u8(pixels),
              "vae/sampled": _u8(sampled[:N_SHOW])}
    return arrays, t[:, 0].tolist()


def write_figure_data(runs_dir: str | Path, summary: dict | None = None) -> Path:
    """Compute ``runs_dir/figure_data.npz`` unless it is current; returns its path."""
    runs_dir = Path(runs_dir)
    summary = summary or load_summary(runs_dir)
    path = runs_dir / FIGURE_DATA
    cells = runs_by_cell(summary) if summary["runs"] else {}
    sigma = noise_sigma(summary.get("grid"))
    fingerprint = _fingerprint(runs_dir, cells, sigma)
    if not cells or _current(path, fingerprint):
        return path
    cond = noise.condition_name("gaussian", sigma)
    seed = min(r["seed"] for r in summary["runs"])
    test = run_data(runs_dir / next(iter(cells.values())))["test"]
    x = to_float(np.ascontiguousarray(test[:EVAL_BATCH]))  # (B, 1, S, S): the first evaluation batch
    noisy = noise.corrupt(x, "gaussian", sigma, noise.eval_generator(seed, cond))  # the evaluation's noisy inputs
    arrays = {"test": _u8(x[:N_SHOW]), "noisy": _u8(noisy[:N_SHOW])}
    vae_run, t = _vae_run(cells), []
    for (_, _, tr), run in sorted(cells.items()):
        model, _ = load_run(runs_dir / run)
        if tr == 0.0 or run == vae_run:  # the generator figure shows the VAE run's decode(mu)
            arrays[f"recon/{run}/clean"] = _u8(reconstruct(model, x[:N_SHOW]))
        arrays[f"recon/{run}/noisy"] = _u8(reconstruct(model, noisy[:N_SHOW]))
    if vae_run is not None:
        vae, t = _generator_arrays(runs_dir / vae_run, x)
        arrays.update(vae)
    index = {"n_show": N_SHOW, "sigma": sigma, "condition": cond, "seed": seed, "vae_run": vae_run, "t": t,
             "fingerprint": fingerprint}
    return save_npz(path, {**arrays, "index": np.array(json.dumps(index))})
