"""Evaluation of a trained run: per-image MSE / PSNR / SSIM on val and test, clean and noisy.

``evaluate_run`` writes ``per_image.npz`` and then ``metrics.json`` (written last, with a sha256:
its presence marks a finished run), which holds the run's ``diagnostics`` (``run_diagnostics``).
``evaluate_folder`` scores a run on every image of another folder into ``per_image_<name>.npz`` and
``metrics_<name>.json`` beside them.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from . import diagnostics as D
from . import metrics as M
from . import noise
from .checkpoint import load_torch
from .config import RunConfig
from .data import FaceSet, eval_batches
from .models import build_model
from .results import metrics_checksum, read_history, read_metrics, read_split, run_flags
from .utils import UserError, save_npz, write_json



def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunConfig]:
    """Rebuild the model from the stored config and load the best weights (eval mode)."""
    run_dir = Path(run_dir)
    if not (run_dir / "best.pt").exists():
        raise UserError(f"{run_dir} holds no trained model (best.pt missing); train it first")
    ckpt = load_torch(run_dir / "best.pt")
    cfg = RunConfig.from_dict(ckpt["config"])
    model = build_model(cfg.model)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg



@torch.no_grad()
def reconstruct(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode reconstruction ((B, 1, S, S) -> same); the VAE decodes its posterior mean."""
    model.eval()
    return model(x)["x_hat"]


# The one convergence rule. A run has converged when its best validation loss improved by less than
# CONVERGED_REL over the last CONVERGED_TAIL of its epochs: no slope that more epochs would continue.
# Its label says which kind of end it is: "overfitting" when the best epoch lies at least two tails
# before the end and the last validation loss is CONVERGED_REL or more above the best (the loss has
# been rising since: the reported weights are the early-stopped ones), "plateau" otherwise; an
# unconverged run is "still improving", or "too short" under CONVERGED_MIN_EPOCHS.
CONVERGED_TAIL = 0.1   # fraction of the epochs (at least one) that forms the tail
CONVERGED_REL = 0.01   # relative improvement of the best val loss over that tail
CONVERGED_MIN_EPOCHS = 10  # below this a one-epoch tail says nothing: such runs are never called converged


def convergence(history: list[dict[str, float]], tail: float = CONVERGED_TAIL,
                threshold: float = CONVERGED_REL) -> dict[str, Any]:
    """The converged flag of a run, its label and evidence, from ``history.csv`` rows (``val_loss`` per epoch).

    ``rel_improvement`` = (best val loss before the tail - best val loss overall) / |best before the tail|;
    ``rise`` = (last val loss - best) / |best|; ``label``: "plateau", "overfitting", "still improving" or
    "too short" (see the rule above). A run of fewer than ``CONVERGED_MIN_EPOCHS`` epochs is never converged.
    """
    losses = [row["val_loss"] for row in history]
    n, k = len(losses), max(1, math.ceil(tail * len(losses)))
    common = {"tail_epochs": k, "epochs": n, "threshold": threshold}
    if n < CONVERGED_MIN_EPOCHS:
        return {"converged": False, "rel_improvement": None, **common, "label": "too short",
                "why": f"too few epochs to see a plateau ({n} < {CONVERGED_MIN_EPOCHS})"}
    before, best = min(losses[:-k]), min(losses)
    rel = (before - best) / abs(before) if before else 0.0
    best_epoch = losses.index(best) + 1
    rise = (losses[-1] - best) / abs(best) if best else 0.0
    out = {"converged": rel < threshold, "rel_improvement": rel, **common, "best_epoch": best_epoch, "rise": rise,
           "why": f"best val loss improved {100 * rel:.2f}% over the last {k} of {n} epochs "
                  f"({'<' if rel < threshold else '>='} {100 * threshold:g}%)"}
    if not out["converged"]:
        return {**out, "label": "still improving"}
    if best_epoch <= n - 2 * k and rise >= threshold:
        return {**out, "label": "overfitting",
                "why": f"best at epoch {best_epoch} of {n}, validation loss rising since (+{100 * rise:.0f}% by epoch {n})"}
    return {**out, "label": "plateau"}


Condition = tuple[str, float]  # ("clean", 0) | ("gaussian", sigma) | ("s&p", p)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images_u8: np.ndarray | torch.Tensor,
             conditions: list[Condition] = (("clean", 0.0), ("gaussian", 0.1)), seed: int = 0,
             device: str | torch.device | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-image metrics of ``model`` on ``images_u8`` ((N, S, S) uint8) under each input condition.

    The noise comes from ``noise.eval_generator(seed, condition)`` on the CPU, so every model on
    every device sees the same noisy images; the metric always compares with the clean image.

    Returns:
        {condition name: {"mse", "psnr", "ssim": (N,) float32 arrays}}.
    """
    device = device or next(model.parameters()).device
    model.eval()
    data = torch.as_tensor(np.asarray(images_u8)).to(device)
    out: dict[str, dict[str, np.ndarray]] = {}
    for kind, level in conditions:
        gen = noise.eval_generator(seed, noise.condition_name(kind, level))  # CPU: same noise on any device
        out[noise.condition_name(kind, level)] = per_image_metrics(
            (model(noise.corrupt(x, kind, level, gen))["x_hat"], x) for x in eval_batches(data))
    return out


def per_image_metrics(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, np.ndarray]:
    """``metrics.all_metrics`` of each (x_hat, x) batch, concatenated: {"mse", "psnr", "ssim": (N,) float32}."""
    parts: dict[str, list[torch.Tensor]] = {}
    for x_hat, x in pairs:
        for k, v in M.all_metrics(x_hat, x).items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v).cpu().numpy() for k, v in parts.items()}


# ---------------------------------------------------------------- the VAE decoding a sampled z

def sampled_z_generator(seed: int) -> torch.Generator:
    """CPU generator of the sampled-z eps (like the evaluation noise: the same draws on any device)."""
    return noise.eval_generator(seed, "sampled_z")


def decode_sampled(model: torch.nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A VAE's decode(mu + sigma * eps) of ``x`` ((B, 1, S, S) -> same), eps drawn from ``generator``.

    This is what the original notebooks reported as the VAE's reconstruction. The eps are drawn
    on the generator's device (the CPU for ``sampled_z_generator``: the same draws on any device),
    then handed to the model's own reparameterization.
    """
    eps = torch.randn((x.shape[0], *model.latent_shape), generator=generator, device=generator.device)
    return model(x, eps=eps.to(x.device))["x_hat"]


@torch.no_grad()
def sampled_z_metrics(model: torch.nn.Module, images_u8: np.ndarray, seed: int,
                      device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Per-image metrics of ``decode_sampled``, batch after batch from one ``sampled_z_generator``."""
    model.eval()
    gen = sampled_z_generator(seed)
    data = torch.as_tensor(np.asarray(images_u8)).to(device)
    return per_image_metrics((decode_sampled(model, x, gen), x) for x in eval_batches(data))


def summarize(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of per-image values (and the count)."""
    means = {k: float(np.mean(v)) for k, v in per_image.items()}
    means["n"] = int(len(next(iter(per_image.values()))))
    return means


def _identity(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """What every metrics file says about the run it scores."""
    return {"run": run_dir.name, "model": cfg.model.name, "reg": cfg.reg.kind,
            "noise_train": cfg.train.noise_train, "seed": cfg.train.seed}


def evaluate_run(run_dir: str | Path, images: np.ndarray,
                 conditions: list[Condition] = (("clean", 0.0), ("gaussian", 0.1)),
                 device: str | torch.device = "cpu", baselines: dict | None = None) -> dict[str, Any]:
    """Evaluate a run's best weights on val and test; write per_image.npz, then metrics.json.

    ``baselines``: the grid's ``baselines.json``, for the "at the mean image" flag (``results.run_flags``).

    The split is the one stored with the run (``split.npz``), never recomputed; ``images`` must
    be the dataset the run was trained on (``data.load_dataset(cfg.data)`` checks its file list).
    """
    run_dir = Path(run_dir)
    model, cfg = load_run(run_dir, device)
    if cfg.data.n_images is not None and cfg.data.n_images != len(images):
        raise UserError(f"{run_dir} was trained on {cfg.data.n_images} images, not the {len(images)} given; "
                        "load its data with data.load_dataset(cfg.data)")
    split = read_split(run_dir, len(images))
    result: dict[str, Any] = {**_identity(run_dir, cfg),
                              "best_epoch": load_torch(run_dir / "best.pt")["epoch"],
                              "convergence": convergence(read_history(run_dir)),
                              "conditions": [noise.condition_name(k, v) for k, v in conditions]}
    arrays = {}
    for name in ("val", "test"):
        per = evaluate(model, images[split[name]], list(conditions), seed=cfg.train.seed, device=device)
        result[name] = {cond: summarize(vals) for cond, vals in per.items()}
        arrays.update({f"{name}/{cond}/{k}": v for cond, vals in per.items() for k, v in vals.items()})
    result["flags"] = run_flags(result, baselines)
    save_npz(run_dir / "per_image.npz", arrays)
    result["per_image"] = "per_image.npz"
    result["diagnostics"] = run_diagnostics(model, cfg, images, split, run_dir.parent, _clean_psnr(result), device)
    write_json(run_dir / "metrics.json", {**result, "sha256": metrics_checksum(result)})
    drop_last(run_dir, cfg)
    return result


def _clean_psnr(metrics: dict[str, Any]) -> float:
    return float(metrics["test"].get("clean", {}).get("psnr", math.nan))


def run_diagnostics(model: torch.nn.Module, cfg: RunConfig, images: np.ndarray, split: dict[str, np.ndarray],
                    folder: Path, test_psnr: float, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``diagnostics.model_diagnostics`` on the clean test split (z = mu), and the PCA-equivalent size of
    ``test_psnr``; PCA's curve is fitted once per split (``folder/pca_curve.json``, shared by its runs; the
    folder above is looked in first, so that a grid's ``sweeps/`` runs reuse the grid's curve)."""
    test = images[split["test"]]
    batches = eval_batches(test, device)
    found = D.model_diagnostics(model, batches, beta=cfg.train.beta, recon=cfg.train.vae_recon)
    key = D.curve_key(asdict(cfg.data), split)
    curve = D.cached_pca_curve(folder, key, images, split, also=(Path(folder).parent,))
    found["pca_equivalent"] = {**D.pca_equivalent_size(curve["k"], curve["psnr"], test_psnr), "curve": key}
    return {"split": "test", **found}


def needs_diagnostics(metrics: dict[str, Any] | None) -> bool:
    """True for a finished run whose metrics.json predates the current diagnostics."""
    return metrics is not None and (metrics.get("diagnostics") or {}).get("version") != D.VERSION


def add_diagnostics(run_dir: str | Path, images: np.ndarray, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Compute the diagnostics of a run evaluated before they existed (from best.pt) into its metrics.json."""
    run_dir = Path(run_dir)
    m = read_metrics(run_dir)
    if m is None:
        raise UserError(f"{run_dir} has no readable metrics.json; evaluate it first")
    model, cfg = load_run(run_dir, device)
    m["diagnostics"] = run_diagnostics(model, cfg, images, read_split(run_dir, len(images)), run_dir.parent,
                                       _clean_psnr(m), device)
    write_json(run_dir / "metrics.json", {**m, "sha256": metrics_checksum(m)})
    return m


def drop_last(run_dir: Path, cfg: RunConfig) -> None:
    """Delete an evaluated run's ``last.pt`` (only ever needed to resume its training; a VAE's is ~200 MB)
    unless ``cfg.train.keep_last``; ``best.pt`` stays."""
    if not cfg.train.keep_last and (run_dir / "metrics.json").exists():
        (run_dir / "last.pt").unlink(missing_ok=True)


def folder_name(root: str | Path, name: str | None = None) -> str:
    """The NAME of ``metrics_<NAME>.json``: ``name`` if given (checked), else ``root``'s last part made safe."""
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise UserError(f"--name {name!r}: use letters, digits, '_', '-' and '.' only")
        return name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(root).resolve().name).strip("-.") or "data"


def evaluate_folder(run_dir: str | Path, faces: FaceSet, name: str,
                    conditions: list[Condition] = (("clean", 0.0), ("gaussian", 0.1)),
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Score a run's best weights on every image of another folder (``faces``, loaded at the run's size).

    Writes ``per_image_<name>.npz``, then ``metrics_<name>.json`` (with a sha256) next to the run's own
    files; the run's ``metrics.json`` and ``per_image.npz`` are never touched. The noise seed is the run's,
    as in ``evaluate_run``. Returns the metrics dict: {"run", "model", ..., "data", "all": {condition: means}}.
    """
    run_dir, name = Path(run_dir), folder_name("", name)
    model, cfg = load_run(run_dir, device)
    if faces.images.shape[1] != cfg.model.image_size:
        raise UserError(f"the images are {faces.images.shape[1]} px, {run_dir} takes {cfg.model.image_size} px; "
                        f"load them at image_size={cfg.model.image_size}")
    per = evaluate(model, np.array(faces.images), list(conditions), seed=cfg.train.seed, device=device)  # a writable copy
    arrays = f"per_image_{name}.npz"
    result: dict[str, Any] = {**_identity(run_dir, cfg),
                              "data": {"root": faces.root, "n_images": len(faces.images),
                                       "files_sha256": faces.files_sha256(), "skipped": len(faces.skipped)},
                              "conditions": list(per), "all": {c: summarize(v) for c, v in per.items()},
                              "per_image": arrays}
    save_npz(run_dir / arrays, {f"all/{c}/{k}": v for c, vals in per.items() for k, v in vals.items()})
    write_json(run_dir / f"metrics_{name}.json", {**result, "sha256": metrics_checksum(result)})
    return result
