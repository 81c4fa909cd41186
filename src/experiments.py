"""Presets and the experiment grid; ``run_grid`` trains and evaluates what is not done yet.

The grid is {AE, VAE} x {none, L1, L2, L1+L2} x {clean-trained, noise-trained (sigma 0.1)}
x seeds. A run is finished when its ``metrics.json`` is readable; finished runs are never
redone, interrupted ones resume from their last checkpoint.

Layout of an output folder (``runs/<preset>`` by default)::

    grid.json            resolved preset, dataset, device, date
    <model>-<reg>-<clean|noise0.1>-s<seed>/   one run folder (see ``train``)
    baselines.json       mean-image and PCA rows on the same test images
    summary.json, summary.csv
"""
from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import os
import platform
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .compression import baseline_metrics
from .config import KINDS, MODEL_NAMES, PRESETS, ModelConfig, Preset, RegConfig, RunConfig, TrainConfig  # noqa: F401
from .data import DataConfig, FaceSet, load_dataset, resolved, split_indices
from .evaluation import evaluate_run, summarize
from .results import read_metrics
from .stacked import default_parallel_runs, fit_stacked, stack_chunks
from .train import TrainingDiverged, fit, is_trained, pick_device
from .utils import UserError, read_json, save_npz, write_json, write_text

def run_name(model: str, reg: str, noise_train: float, seed: int) -> str:
    return f"{model}-{reg}-{'clean' if noise_train == 0 else f'noise{noise_train:g}'}-s{seed}"


def grid_configs(preset: Preset, data: DataConfig, device: str = "auto", progress: bool = True,
                 models: tuple[str, ...] = MODEL_NAMES) -> dict[str, RunConfig]:
    """Every run of the grid, keyed by run name (in training order)."""
    out = {}
    for noise_train in (0.0, preset.noise_sigma):
        for model in models:
            for reg in KINDS:
                for seed in preset.seeds:
                    out[run_name(model, reg, noise_train, seed)] = RunConfig(
                        model=ModelConfig(name=model, image_size=preset.image_size),
                        reg=RegConfig(kind=reg),
                        train=replace(preset.train, noise_train=noise_train, seed=seed, device=device,
                                      progress=progress),
                        data=data)
    return out


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


@contextmanager
def grid_lock(out: Path) -> Iterator[None]:
    """One writer per output folder: a second process exits with a clear message."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise UserError(f"another process is writing {out} ({f.read().strip() or 'pid unknown'}); "
                            "wait for it to finish or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield


def check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is an existing file, not a folder")
    probe = out if out.exists() else next(p for p in out.parents if p.exists())
    if not os.access(probe, os.W_OK):
        raise UserError(f"--out {out} is not writable")


def run_grid(preset: Preset, out: str | Path, data_root: str | None = None, device: str = "auto",
             models: tuple[str, ...] = MODEL_NAMES, progress: bool = True, log=print,
             parallel_runs: int | None = None) -> dict[str, Any]:
    """Train and evaluate every unfinished run of the grid, then write the summary.

    ``parallel_runs``: runs of one model trained together (see ``run_configs``).
    Returns the summary dict (also in ``out/summary.json``).
    """
    out = Path(out)
    check_output_dir(out)
    data_cfg = replace(preset.data, root=data_root)
    faces = load_dataset(data_cfg, progress=progress, log=log)  # before the lock: a bad --data writes nothing
    with grid_lock(out):
        data_cfg = resolved(data_cfg, faces)  # the absolute folder + its file-list digest, with every run
        dev = pick_device(device)
        info = grid_info(preset, faces, data_cfg, dev)
        log(f"preset {preset.name}: " + ", ".join(f"{k}={v}" for k, v in preset.summary().items()
                                                   if k not in ("name", "description")))
        log(f"dataset: {info['dataset']} ({info['n_images']} images: {info['split_sizes']}); device: {info['device']}")
        old = _read_json_or_none(out / "grid.json")
        write_json(out / "grid.json", {**info, "started": (old or info)["started"]})
        configs = grid_configs(preset, data_cfg, device, progress, models)
        todo = run_configs(configs, out, faces.images, _conditions(preset), dev, log, parallel_runs)
        if not (out / "baselines.json").exists() or todo:
            write_baselines(out, faces, data_cfg)
        return write_summary(out)


def run_configs(configs: dict[str, RunConfig], out: Path, images: np.ndarray, conditions: list[tuple[str, float]],
                device: torch.device, log=print, parallel_runs: int | None = None) -> list[str]:
    """Train (resuming) and evaluate every config whose ``out/<name>/metrics.json`` is not readable.

    ``parallel_runs``: how many runs of one model (``stacked.stack_key``) train together as one
    stacked model; 1 = one at a time with ``fit``, 0 = all, None = ``default_parallel_runs``.
    A run that diverges is reported and the others go on; the error is raised at the end.
    Returns the names done by this call; finished runs are never redone.
    """
    todo = [name for name in configs if read_metrics(out / name) is None]
    log(f"{len(configs) - len(todo)} of {len(configs)} runs already finished; {len(todo)} to do")
    untrained = {n: configs[n] for n in todo if not is_trained(out / n, configs[n].train.epochs)}
    n_parallel = default_parallel_runs(pick_device(device)) if parallel_runs is None else parallel_runs
    failed: dict[str, TrainingDiverged] = {}
    if n_parallel != 1:
        for chunk in stack_chunks(untrained, n_parallel):
            results = fit_stacked([configs[n] for n in chunk], images, [out / n for n in chunk], resume=True, log=log)
            failed.update({n: r["error"] for n, r in zip(chunk, results) if r["error"] is not None})
    for i, name in enumerate(todo, 1):
        if name in failed:
            continue
        log(f"[{i}/{len(todo)}] {name}")
        if name in untrained and n_parallel == 1:
            try:
                fit(configs[name], images, out / name, resume=True, log=log)
            except TrainingDiverged as e:
                failed[name] = e
                log(f"{name}: {e}; the other runs go on")
                continue
        evaluate_run(out / name, images, conditions, device=device)
    if failed:
        raise TrainingDiverged("; ".join(f"{name}: {e}" for name, e in failed.items()))
    return todo


def train_latent_variant(base: RunConfig, latent: int, images: np.ndarray, out: Path, log=print) -> Path:
    """Train (or resume, or reuse) ``base`` with another latent size in ``out``: AE bottleneck
    channels or VAE latent dimensions (``rd`` draws their rate-distortion curves)."""
    key = "ae_latent" if base.model.name == "ae" else "vae_latent"
    cfg = replace(base, model=replace(base.model, **{key: latent}))
    if not is_trained(out, cfg.train.epochs):
        log(f"rd: training {base.model.name} with latent {latent} ({cfg.train.epochs} epochs) in {out}")
        fit(cfg, images, out, resume=True, log=log)
    return out


def _conditions(preset: Preset) -> list[tuple[str, float]]:
    return [("clean", 0.0), ("gaussian", preset.noise_sigma)]


def grid_info(preset: Preset, faces: FaceSet, data_cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    sizes = {k: len(v) for k, v in split_indices(len(faces.images), data_cfg.split, data_cfg.split_seed).items()}
    dataset = {"real": "Flickr-Faces 70k thumbnails (real)", "sample": "synthetic sample (src.synthetic)"}
    return {"preset": preset.summary(), "dataset": dataset.get(faces.source, f"image folder {faces.root}"),
            "source": faces.source, "data_root": faces.root, "n_images": len(faces.images),
            "split_sizes": sizes, "device": device_description(device), "torch": torch.__version__,
            "started": dt.datetime.now().isoformat(timespec="seconds")}


def write_baselines(out: Path, faces: FaceSet, data_cfg: DataConfig, pca_k: int = 200) -> dict[str, Any]:
    """Mean-image and PCA-k rows (fitted on train) on val and test; per-image arrays in baselines.npz."""
    split = split_indices(len(faces.images), data_cfg.split, data_cfg.split_seed)
    result: dict[str, Any] = {"pca_k_requested": pca_k, "per_image": "baselines.npz"}
    arrays = {}
    per = baseline_metrics(faces.images[split["train"]], {s: faces.images[split[s]] for s in ("val", "test")}, pca_k)
    for name, rows in per.items():
        arrays.update({f"{name}/{row}/{k}": v for row, m in rows.items() for k, v in m.items()})
        result[name] = {row: summarize(m) for row, m in rows.items()}
    save_npz(out / "baselines.npz", arrays)
    write_json(out / "baselines.json", result)
    return result


def _read_json_or_none(path: Path) -> Any:
    try:
        return read_json(path)
    except (ValueError, FileNotFoundError):
        return None


SUMMARY_KEYS = ("run", "model", "reg", "noise_train", "seed", "best_epoch")


def write_summary(out: Path) -> dict[str, Any]:
    """Collect every finished run's metrics.json into summary.json and summary.csv."""
    runs = []
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        m = read_metrics(d)
        if m is not None:
            runs.append({k: v for k, v in m.items() if k != "per_image"})
    summary = {"grid": _read_json_or_none(out / "grid.json"), "runs": runs,
               "baselines": _read_json_or_none(out / "baselines.json")}
    write_json(out / "summary.json", summary)
    rows = []
    for r in runs:
        row = {k: r[k] for k in SUMMARY_KEYS}
        for split in ("val", "test"):
            for cond, vals in r[split].items():
                row.update({f"{split}_{cond}_{k}": v for k, v in vals.items() if k != "n"})
        rows.append(row)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(out / "summary.csv", buf.getvalue())
    return summary
