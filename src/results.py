"""The results store: reading and validating what a run folder or a grid folder holds.

Every file of the store is read here: a run's config, split, history, metrics and per-image
arrays; a grid's summary, noise sweeps, parameter sweeps, claims, figure data and
rate-distortion curves. No torch here: everything is JSON, CSV or npz, so figures and tables
can be redrawn from a weight-free results bundle.
"""
from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .config import PROTOCOL_PRESETS, DataConfig, analysis_mode
from .stats import mean_std
from .utils import UserError, read_json


def read_split(run_dir: str | Path, n_images: int | None = None) -> dict[str, np.ndarray]:
    """The train/val/test indices stored with a run (``split.npz``), never recomputed.

    ``n_images``: the size of the loaded dataset, to check every index falls inside it.
    """
    path = Path(run_dir) / "split.npz"
    try:
        with np.load(path) as z:
            split = {k: z[k] for k in ("train", "val", "test")}
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path} is missing or unreadable ({e}); train the run again") from None
    if n_images is not None and max(int(v.max(initial=-1)) for v in split.values()) >= n_images:
        raise UserError(f"{path} indexes images beyond the {n_images} loaded; the data folder changed since training")
    return split


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


MEAN_IMAGE = "mean image"  # the baselines' row of the mean training image (compression.baseline_metrics)
MEAN_IMAGE_DB = 1.0  # a run within this many dB of its test PSNR, or below its SSIM, is "at the mean image"
AT_MEAN, OVERFITTING = "at the mean image", "overfitting"  # the flags of ``run_flags``


def mean_image_flag(test_clean: dict[str, float], baselines: dict | None) -> str | None:
    """Why a run's clean test means (``{"psnr", "ssim"}``) are no better than sending the mean training
    image for every face, or None (also when ``baselines`` has no mean-image row)."""
    ref = ((baselines or {}).get("test") or {}).get(MEAN_IMAGE)
    if not ref:
        return None
    psnr, ssim, why = test_clean["psnr"], test_clean["ssim"], []
    if psnr - ref["psnr"] <= MEAN_IMAGE_DB:
        why.append(f"test PSNR {psnr:.1f} dB, within {MEAN_IMAGE_DB:g} dB of the mean image's {ref['psnr']:.1f} dB")
    if ssim < ref["ssim"]:
        why.append(f"test SSIM {ssim:.3f}, below the mean image's {ref['ssim']:.3f}")
    return "; ".join(why) or None


def run_flags(run: dict[str, Any], baselines: dict | None) -> dict[str, str]:
    """{flag: why} of a metrics.json / summary row: what its numbers do not say alone. "overfitting" (the
    label of ``evaluation.convergence``) and "at the mean image" (``mean_image_flag``); {} for neither."""
    flags = {}
    conv = run.get("convergence") or {}
    if conv.get("label") == OVERFITTING:
        flags[OVERFITTING] = conv["why"]
    at_mean = mean_image_flag(run["test"]["clean"], baselines)
    if at_mean:
        flags[AT_MEAN] = at_mean
    return flags


def metrics_checksum(m: dict[str, Any]) -> str:
    """sha256 of a metrics dict without its "sha256" key (JSON floats round-trip exactly)."""
    body = json.dumps({k: v for k, v in m.items() if k != "sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """metrics.json of a finished run, or None if missing or unreadable (then it is redone)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return None
    try:
        m = read_json(path)
        if not isinstance(m, dict) or not all(k in m for k in ("val", "test", "conditions")):
            raise ValueError(f"{path} lacks val/test/conditions")
        digest = m.pop("sha256", None)  # files written before the checksum existed have none
        if digest is not None and digest != metrics_checksum(m):
            raise ValueError(f"{path} fails its checksum (changed or damaged after it was written)")
        return m
    except ValueError as e:
        warnings.warn(f"{e}; this run will be evaluated again", stacklevel=2)
        return None


# ---------------------------------------------------------------- names in the store

BASELINES = "baselines.json"         # mean-image and PCA rows of a grid (experiments.write_baselines)
NOISE_JSON, NOISE_NPZ = "noise_sweep.json", "noise_sweep.npz"  # per run, written by sweeps.noise_sweep
SWEEPS_JSON = "sweeps/sweeps.json"   # index of the parameter sweeps (sweeps.run_sweeps)
CLAIMS_JSON = "claims.json"          # every paired test of the analysis (claims.check_claims)
FIGURE_DATA = "figure_data.npz"      # the images the figures show (figdata.write_figure_data)
RD_DIR = "rd"                        # rate-distortion curves (rd.run_rd)
PCA_CURVE_JSON = "pca_curve.json"    # per folder of runs: PCA-k's test PSNR per k (diagnostics.cached_pca_curve)
DEFAULT_SIGMA = 0.1                  # noise sigma of grids whose grid.json predates the preset record
MODEL_LABEL = {"ae": "AE", "vae": "VAE"}  # what tables, figures and claims.json call the store's keys
REG_LABEL = {"none": "Baseline", "l1": "L1", "l2": "L2", "l1+l2": "L1+L2"}  # order of regularization.KINDS


# ---------------------------------------------------------------- a run folder

def read_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's config.json as a dict (``train.RunConfig.from_dict`` rebuilds the dataclasses)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir} is not a run folder (no config.json)")
    return read_json(path)


def run_data(run_dir: str | Path, cache: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The images a run was trained and tested on: {"all", "train", "val", "test"}, (N, S, S) uint8.

    The folder, size and limit come from the stored config (``data.load_dataset`` checks that the
    folder still holds the same files), the split from the stored ``split.npz``. ``cache`` (a dict
    the caller keeps) loads each distinct dataset once over many runs.
    """
    from .data import load_dataset  # PIL and tqdm: only this reader needs them

    section = read_config(run_dir)["data"]
    key = json.dumps(section, sort_keys=True)
    cache = {} if cache is None else cache
    if key not in cache:
        cache[key] = load_dataset(DataConfig(**section), progress=False, log=lambda s: None).images
    images = cache[key]
    split = read_split(run_dir, len(images))
    return {"all": images, **{k: np.asarray(images[v]) for k, v in split.items()}}


# ---------------------------------------------------------------- a grid folder

def load_summary(runs_dir: str | Path) -> dict[str, Any]:
    """summary.json of a grid: {"grid": grid.json, "runs": [metrics rows], "baselines"}."""
    path = Path(runs_dir) / "summary.json"
    if not path.exists():
        raise UserError(f"{path} not found; run `python -m src reproduce --out {runs_dir}` first")
    return read_json(path)


def read_grid(runs_dir: Path) -> dict[str, Any]:
    """grid.json of a grid folder (preset, dataset, device, date); {} when missing or unreadable."""
    try:
        return read_json(runs_dir / "grid.json")
    except (FileNotFoundError, ValueError):
        return {}


def preset_of(grid: dict | None) -> dict[str, Any]:
    """The resolved preset a grid was run with (``summary["grid"]``; {} when unknown)."""
    return (grid or {}).get("preset") or {}


def noise_sigma(grid: dict | None) -> float:
    """Sigma of a grid's noise-trained cells and noisy evaluation."""
    return float(preset_of(grid).get("noise_sigma", DEFAULT_SIGMA))


def gaussian_condition(sigma: float) -> str:
    """Store key of Gaussian noise at ``sigma`` ("gaussian_0.1"): ``noise.condition_name``'s, without torch."""
    return f"gaussian_{sigma:g}"


def is_analysis(summary: dict) -> bool:
    """True for the grids of the analysis presets (their report goes to its own README blocks)."""
    return analysis_mode(preset_of(summary.get("grid")).get("name"))


def preview_status(grid: dict | None, runs: list[dict]) -> str:
    """What a figure or table drawn from ``runs`` must say about itself: "preview: not converged" when
    one of them has not converged, "preview: preset NAME" for a converged run of a smaller preset,
    "" for converged runs of the protocol."""
    if any(not (r.get("convergence") or {}).get("converged") for r in runs):
        return "preview: not converged"
    name = preset_of(grid).get("name")
    return "" if name in PROTOCOL_PRESETS else f"preview: preset {name}"


def finished_runs(runs_dir: Path) -> list[Path]:
    """Run folders of ``runs_dir`` whose metrics.json is readable (sweeps/ has none: it is left out)."""
    return [d for d in sorted(runs_dir.iterdir()) if d.is_dir() and read_metrics(d) is not None]


def runs_by_cell(summary: dict, seed: int | None = None) -> dict[tuple, str]:
    """{(model, reg, noise_train): run folder name}: one run per grid cell, of ``seed`` (default: the lowest)."""
    seed = min(r["seed"] for r in summary["runs"]) if seed is None else seed
    return {(r["model"], r["reg"], r["noise_train"]): r["run"] for r in summary["runs"] if r["seed"] == seed}


def cell(runs: list[dict], model: str, reg: str, noise_train: float) -> dict[int, str]:
    """{seed: run name}: every seed of one grid cell."""
    return {r["seed"]: r["run"] for r in runs
            if r["model"] == model and r["reg"] == reg and r["noise_train"] == noise_train}


def aggregate(runs: list[dict], split: str, cond: str, metric: str) -> dict[tuple, tuple[float, float, int]]:
    """{(model, reg, noise_train): (mean, std, n_seeds)} across seeds of summary-like rows."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        if cond in r[split]:
            groups[(r["model"], r["reg"], r["noise_train"])].append(r[split][cond][metric])
    return {k: mean_std(v) for k, v in groups.items()}


class Store:
    """Per-image arrays of a results folder: RUN/per_image.npz, else RUN/noise_sweep.npz (each loaded once)."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.runs_dir = Path(runs_dir)
        self._files: dict[Path, dict[str, np.ndarray]] = {}

    def _load(self, path: Path) -> dict[str, np.ndarray]:
        if path not in self._files:
            with np.load(path) as z:
                self._files[path] = {k: z[k] for k in z.files}
        return self._files[path]

    def get(self, run: str, split: str, cond: str, metric: str) -> np.ndarray:
        key = f"{split}/{cond}/{metric}"
        for name in ("per_image.npz", NOISE_NPZ):
            path = self.runs_dir / run / name
            if path.exists() and key in self._load(path):
                return self._load(path)[key]
        raise UserError(f"no per-image values {key} for {self.runs_dir / run}; "
                        f"run `python -m src analyze {self.runs_dir}` first")

    def has(self, run: str, split: str, cond: str, metric: str) -> bool:
        try:
            self.get(run, split, cond, metric)
            return True
        except UserError:
            return False


def noise_runs(runs_dir: Path, summary: dict) -> list[dict]:
    """summary-like rows from each run's noise_sweep.json (runs without one are left out)."""
    return [read_json(runs_dir / r["run"] / NOISE_JSON) for r in summary["runs"]
            if (runs_dir / r["run"] / NOISE_JSON).exists()]


def levels(rows: list[dict], kind: str) -> list[tuple[float, str]]:
    """[(level, condition name)] of one noise kind in noise-sweep rows, clean (level 0) first."""
    found = {0.0: "clean"}
    for r in rows:
        for name, (k, v) in r.get("levels", {}).items():
            if k == kind:
                found[float(v)] = name
    return sorted(found.items())


def sweep_rows(runs_dir: Path) -> list[dict]:
    """Sweep points with their metrics.json and penalty share (penalty / reconstruction at the best epoch)."""
    path = runs_dir / SWEEPS_JSON
    if not path.exists():
        return []
    rows = []
    for p in read_json(path)["points"]:
        m = read_metrics(runs_dir / p["run"])
        if m is None:
            continue
        hist = read_history(runs_dir / p["run"])
        best = next((h for h in hist if h["epoch"] == m["best_epoch"]), hist[-1])
        share = best.get("train_penalty", 0.0) / best["train_recon"] if best.get("train_recon") else 0.0
        rows.append({**p, "metrics": m, "penalty_share": share})
    return rows


def read_claims(runs_dir: Path) -> dict[str, Any]:
    """claims.json: the verdicts on the four claims and the paired tables of the analysis."""
    path = runs_dir / CLAIMS_JSON
    if not path.exists():
        raise UserError(f"{path} not found; run `python -m src analyze {runs_dir}` first")
    return read_json(path)


def read_figure_data(runs_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(index, arrays) of figure_data.npz: the images the figures show, as uint8 (see ``figdata``)."""
    path = runs_dir / FIGURE_DATA
    if not path.exists():
        raise UserError(f"{path} not found; run `python -m src report {runs_dir}` (it computes it from the weights)")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("index"))), arrays


def load_rd(runs_dir: str | Path) -> tuple[dict, dict[str, dict]] | None:
    """(index, {method key: curve}) from ``runs_dir/rd``, or None when there is none."""
    rd = Path(runs_dir) / RD_DIR
    if not (rd / "index.json").exists():
        return None
    index = read_json(rd / "index.json")
    return index, {k: read_json(rd / f) for k, f in index["methods"].items()}


def read_pca_curves(runs_dir: str | Path) -> dict[str, dict]:
    """{split key: {"k", "psnr", "n_train", "n_test"}} of ``runs_dir/pca_curve.json``; {} when there is none."""
    try:
        return read_json(Path(runs_dir) / PCA_CURVE_JSON).get("curves", {})
    except (FileNotFoundError, ValueError, AttributeError):
        return {}
