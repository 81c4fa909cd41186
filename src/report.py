"""Figures and Markdown tables, from stored results only (no training).

Inputs are the files ``experiments.run_grid`` wrote: ``summary.json`` (all metrics),
each run's ``history.csv`` and ``per_image.npz``, ``baselines.json``, and each run's
``best.pt`` to draw reconstructions. Every number printed in a figure or a table is
read from those files.

Figure names keep the original study's, so existing links work.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in notebooks and headless

from . import noise, rd
from .data import DataConfig, load_images, split_indices, to_float
from .regularization import KINDS
from .evaluation import EVAL_BATCH, load_run, reconstruct
from .results import read_history
from .utils import UserError, read_json, write_text

REG_LABEL = {"none": "Baseline", "l1": "L1", "l2": "L2", "l1+l2": "L1+L2"}
MODEL_LABEL = {"ae": "AE", "vae": "VAE"}
N_SHOW = 6  # test images shown in every grid (the first N of the test split)
START, END = "<!-- results:start -->", "<!-- results:end -->"
FIGURES = {
    "ae": {"recon": "AE_reg_images2.png", "noise": "AE_noise_reg_images.png", "loss": ["AE_loss.png"]},
    "vae": {"recon": "vae_reg_images_2.png", "noise": "VAE_noise_reg_images.png",
            "loss": ["VAE_train_loss.png", "VAE_val_loss.png"]},
}


# ---------------------------------------------------------------- numbers from summary.json

def load_summary(runs_dir: Path) -> dict[str, Any]:
    path = runs_dir / "summary.json"
    if not path.exists():
        raise UserError(f"{path} not found; run `python -m src reproduce --out {runs_dir}` first")
    return read_json(path)


def aggregate(runs: list[dict], split: str, cond: str, metric: str) -> dict[tuple, tuple[float, float, int]]:
    """{(model, reg, noise_train): (mean, std, n_seeds)} across seeds; std is 0 for one seed."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        if cond in r[split]:
            groups[(r["model"], r["reg"], r["noise_train"])].append(r[split][cond][metric])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
            for k, v in groups.items()}


def _fmt(metric: str, mean: float, std: float, n: int) -> str:
    digits = {"mse": 5, "psnr": 2, "ssim": 4}[metric]
    text = f"{mean:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if n > 1 else text


def main_table(summary: dict, model: str) -> str:
    """The original study's layout: clean-trained models, clean inputs, val and test."""
    runs = summary["runs"]
    cols = [(m, s) for m in ("mse", "psnr", "ssim") for s in ("val", "test")]
    head = ["Regularization"] + [f"{m.upper()} ({'Validation' if s == 'val' else 'Test'})" for m, s in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    agg = {(m, s): aggregate(runs, s, "clean", m) for m, s in cols}
    for reg in KINDS:
        key = (model, reg, 0.0)
        if key not in agg[cols[0]]:
            continue
        lines.append("| " + " | ".join([REG_LABEL[reg]] + [_fmt(m, *agg[(m, s)][key]) for m, s in cols]) + " |")
    base = summary.get("baselines") or {}
    for row in (base.get("test") or {}):
        cells = []
        for m, s in cols:
            v = base.get(s, {}).get(row)
            cells.append(_fmt(m, v[m], 0, 1) if v else "—")
        lines.append(f"| *{row} (reference)* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise_table(summary: dict, sigma: float) -> str:
    """Test PSNR / SSIM: clean- vs noise-trained models on clean vs noisy inputs."""
    runs, noisy = summary["runs"], noise.condition_name("gaussian", sigma)
    head = ["Model", "Regularization"] + [f"{metric} {tr}-trained, {inp} input"
                                          for metric in ("PSNR", "SSIM")
                                          for tr in ("clean", "noise") for inp in ("clean", "noisy")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    aggs = {(m, c): aggregate(runs, "test", c, m) for m in ("psnr", "ssim") for c in ("clean", noisy)}
    for model in ("ae", "vae"):
        for reg in KINDS:
            cells = []
            for metric in ("psnr", "ssim"):
                for tr in (0.0, sigma):
                    for cond in ("clean", noisy):
                        v = aggs[(metric, cond)].get((model, reg, tr))
                        cells.append(_fmt(metric, *v) if v else "—")
            if any(c != "—" for c in cells):
                lines.append(f"| {MODEL_LABEL[model]} | {REG_LABEL[reg]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures

def _runs_by_cell(summary: dict, seed: int | None = None) -> dict[tuple, str]:
    """{(model, reg, noise_train): run folder name} for one seed (the lowest by default)."""
    seed = min(r["seed"] for r in summary["runs"]) if seed is None else seed
    return {(r["model"], r["reg"], r["noise_train"]): r["run"] for r in summary["runs"] if r["seed"] == seed}


def loss_figures(runs_dir: Path, summary: dict, figures: Path, model: str) -> list[Path]:
    cells = _runs_by_cell(summary)
    histories = {reg: read_history(runs_dir / cells[(model, reg, 0.0)])
                 for reg in KINDS if (model, reg, 0.0) in cells}
    names = FIGURES[model]["loss"]
    panels = [("train_loss", "training loss"), ("val_loss", "validation loss")]
    groups = [panels] if len(names) == 1 else [[p] for p in panels]
    written = []
    for name, group in zip(names, groups):
        fig = Figure(figsize=(5 * len(group), 3.4))
        axes = fig.subplots(1, len(group), squeeze=False)
        for ax, (key, title) in zip(axes[0], group):
            for reg, h in histories.items():
                ax.plot([r["epoch"] for r in h], [r[key] for r in h], label=REG_LABEL[reg], marker=".")
            ax.set(title=f"{MODEL_LABEL[model]} {title} (clean-trained)", xlabel="epoch",
                   ylabel="MSE per pixel" if model == "ae" else "BCE + KL per image")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, figures / name))
    return written


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path


def _test_images(runs_dir: Path, summary: dict) -> tuple[np.ndarray, torch.Tensor]:
    """The test split of the grid's dataset: (uint8 array, first batch as float (B, 1, S, S))."""
    some_run = runs_dir / summary["runs"][0]["run"]
    cfg = DataConfig(**{**read_json(some_run / "config.json")["data"], "split": tuple(
        read_json(some_run / "config.json")["data"]["split"])})
    faces = load_images(cfg.root, cfg.image_size, limit=cfg.limit, cache_dir=cfg.cache_dir, progress=False)
    test = faces.images[split_indices(len(faces.images), cfg.split, cfg.split_seed)["test"]]
    return test, to_float(torch.from_numpy(np.ascontiguousarray(test[:EVAL_BATCH])))


def _grid(rows: list[tuple[str, torch.Tensor, list[str] | None]], path: Path, title: str) -> Path:
    """rows: (label, images (K, 1, S, S), captions or None)."""
    k = rows[0][1].shape[0]
    fig = Figure(figsize=(1.25 * k + 0.9, 1.38 * len(rows)))
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (label, imgs, captions) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(imgs[c, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if captions:
                ax.set_xlabel(captions[c], fontsize=6, labelpad=1)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.1, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return _save(fig, path)


def _captions(run_dir: Path, cond: str) -> list[str]:
    per = np.load(run_dir / "per_image.npz")
    return [f"{p:.1f} dB / {s:.3f}" for p, s in zip(per[f"test/{cond}/psnr"][:N_SHOW],
                                                    per[f"test/{cond}/ssim"][:N_SHOW])]


def image_figures(runs_dir: Path, summary: dict, figures: Path, model: str, x: torch.Tensor) -> list[Path]:
    """Reconstruction grid (clean inputs) and noisy-input grid for one model."""
    cells = _runs_by_cell(summary)
    sigma = summary["grid"]["preset"]["noise_sigma"] if summary.get("grid") else 0.1
    cond = noise.condition_name("gaussian", sigma)
    seed = min(r["seed"] for r in summary["runs"])
    # the evaluation noise of evaluate(): first batch, first N_SHOW images
    noisy = noise.corrupt(x, "gaussian", sigma, noise.eval_generator(seed, cond))[:N_SHOW]
    clean = x[:N_SHOW]
    recon_rows = [("original", clean, None)]
    noise_rows = [("original", clean, None), (f"noisy σ={sigma:g}", noisy, None)]
    for tr, tag in ((0.0, "clean-tr."), (sigma, "noise-tr.")):
        for reg in KINDS:
            if (model, reg, tr) not in cells:
                continue
            run_dir = runs_dir / cells[(model, reg, tr)]
            net, _ = load_run(run_dir)
            if tr == 0.0:
                recon_rows.append((REG_LABEL[reg], reconstruct(net, clean), _captions(run_dir, "clean")))
            noise_rows.append((f"{REG_LABEL[reg]} {tag}", reconstruct(net, noisy), _captions(run_dir, cond)))
    name = MODEL_LABEL[model]
    return [
        _grid(recon_rows, figures / FIGURES[model]["recon"],
              f"{name}: test reconstructions per regularization (PSNR / SSIM per image)"),
        _grid(noise_rows, figures / FIGURES[model]["noise"],
              f"{name}: noisy inputs (σ={sigma:g}), clean- and noise-trained models"),
    ]


# ---------------------------------------------------------------- README section

def results_markdown(summary: dict, figures_rel: str, notes: dict[str, str] | None = None) -> str:
    """The README results section; ``notes`` = {model: line under its main table} (bytes per image)."""
    g = summary.get("grid") or {}
    p = g.get("preset", {})
    sigma = p.get("noise_sigma", 0.1)
    real = g.get("source") == "real"
    lines = [
        f"*Generated by `python -m src reproduce --preset {p.get('name')}` and `report` on "
        f"{dt.date.today().isoformat()}. Dataset: **{g.get('dataset')}**, {g.get('n_images')} images "
        f"(train/val/test {g.get('split_sizes', {}).get('train')}/{g.get('split_sizes', {}).get('val')}/"
        f"{g.get('split_sizes', {}).get('test')}), {p.get('image_size')}×{p.get('image_size')} px. "
        f"Preset `{p.get('name')}`: {p.get('epochs')} epochs, batch {p.get('batch_size')}, "
        f"{len(p.get('seeds', [0]))} seed(s). Device: {g.get('device')}, torch {g.get('torch')}.*",
        "",
    ]
    if not real:
        lines += ["> **These are not Flickr-Faces numbers.** They come from the procedural faces of "
                  "`src/synthetic.py`, which exist so that the pipeline runs anywhere; run the `full` preset "
                  "on the real thumbnails to get results about real faces.", ""]
    lines += ["Metrics are means over images of per-image values (data range 1.0); the VAE is scored on "
              "its posterior mean μ. PSNR in dB. Reference rows use no training: the mean training image, "
              "and PCA fitted on the training split with as many components as the VAE has latent "
              "dimensions.", ""]
    for model in ("ae", "vae"):
        f = FIGURES[model]
        lines += [f"#### {MODEL_LABEL[model]}: clean-trained, clean inputs", "", main_table(summary, model), "",
                  *([(notes or {})[model], ""] if (notes or {}).get(model) else []),
                  f"![{model} reconstructions]({figures_rel}/{f['recon']})", ""]
        lines += [f"![{model} loss]({figures_rel}/{n})" for n in f["loss"]] + [""]
    lines += [f"#### Noise robustness (test split, Gaussian σ = {sigma:g})", "", noise_table(summary, sigma), ""]
    lines += [f"![{m} noisy inputs]({figures_rel}/{FIGURES[m]['noise']})" for m in ("ae", "vae")] + [""]
    return "\n".join(lines)


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the results markers (appending them if absent)."""
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    write_text(readme, text)


def model_figures(runs_dir: str | Path, figures: str | Path, model: str, summary: dict | None = None,
                  x: torch.Tensor | None = None) -> list[Path]:
    """Loss curves, reconstruction grid and noisy-input grid of one model (the notebooks call this)."""
    runs_dir, figures = Path(runs_dir), Path(figures)
    summary = summary or load_summary(runs_dir)
    x = _test_images(runs_dir, summary)[1] if x is None else x
    return loss_figures(runs_dir, summary, figures, model) + image_figures(runs_dir, summary, figures, model, x)


def report(runs_dir: str | Path, figures: str | Path = "Figures", readme: str | Path | None = None) -> list[Path]:
    """Write every figure, ``runs_dir/tables.md`` and (optionally) the README section."""
    runs_dir, figures = Path(runs_dir), Path(figures)
    summary = load_summary(runs_dir)
    if not summary["runs"]:
        raise UserError(f"{runs_dir}/summary.json lists no finished runs")
    from . import analysis  # its figures, tables and README blocks (src/analysis.py)

    if analysis.is_analysis(summary):  # own figure folder and README blocks; the results section is kept
        return analysis.analysis_report(runs_dir, figures, readme, summary)
    written: list[Path] = []
    models = sorted({r["model"] for r in summary["runs"]}, key=list(MODEL_LABEL).index)
    _, x = _test_images(runs_dir, summary)
    for model in models:
        written += model_figures(runs_dir, figures, model, summary, x)
    written += rd.rd_figures(runs_dir, figures)  # only when runs_dir/rd exists (python -m src rd)
    rel = os.path.relpath(figures, Path(readme).parent if readme else runs_dir).replace(os.sep, "/")
    section = results_markdown(summary, rel, rd.bytes_notes(runs_dir)) + rd.rd_markdown(runs_dir, rel)
    written.append(write_text(runs_dir / "tables.md", section + "\n"))
    if readme:
        update_readme(Path(readme), section)
    return written
