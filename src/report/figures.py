"""Every figure of the report, drawn from the results store only (``results``: summary, histories,
per-image arrays, figure_data.npz, noise sweeps, sweeps, claims.json, rd/*.json).

A figure drawn from runs that have not converged says so in its own title ("preview: not
converged", ``results.preview_status``), so that a copy seen out of context cannot pass for a result.

No pyplot: ``matplotlib.figure.Figure`` holds no global backend state, so this is safe in
notebooks and headless; every PNG is written atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogFormatter, MaxNLocator

from ..results import (MODEL_LABEL, REG_LABEL, Store, aggregate, levels, load_rd, load_summary, preview_status,
                       read_figure_data, read_history, runs_by_cell)
from ..stats import METRICS, mean_std
from ..utils import atomic_write
from .style import COLORS, DPI, FIGURES, RD_FIGURES, RD_STYLE, SWEEP_LABEL
from .tables import figure_caption, row_name

FigureData = tuple[dict, dict[str, np.ndarray]]  # results.read_figure_data: (index, uint8 arrays)


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` through a temp file and a rename."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def tagged(title: str, tag: str) -> str:
    """``title`` with the preview tag on a line of its own (unchanged when there is none)."""
    return f"{title}\n{tag}" if tag else title


def model_tag(summary: dict, model: str) -> str:
    """The preview tag of a figure that shows the runs of ``model`` (``results.preview_status``)."""
    return preview_status(summary.get("grid"), [r for r in summary["runs"] if r["model"] == model])


def _grid(rows: list[tuple[str, np.ndarray, list[str] | None]], path: Path, title: str) -> Path:
    """An image grid; rows: (label, uint8 images (K, S, S), captions or None).

    One axes per row showing the row's K images side by side (framed, a white gap between them), laid out
    by hand: matplotlib's per-image axes and tight_layout cost about 15 ms an image.
    """
    k, s = rows[0][1].shape[:2]
    side, gap, left, row_h = 1.1, 0.15, 0.9, 1.38  # inches: image side, gap, label column, row height
    top = 0.15 + 0.17 * (title.count("\n") + 1)
    width, height = left + k * (side + gap), top + row_h * len(rows)
    fig = Figure(figsize=(width, height))
    g = max(1, round(s * gap / side))  # the gap in pixels
    strip_w = k * s + (k - 1) * g
    for r, (label, imgs, captions) in enumerate(rows):
        strip = np.full((s, strip_w), 255, np.uint8)
        for c in range(k):
            strip[:, c * (s + g):c * (s + g) + s] = imgs[c]
        bottom = height - top - (r + 1) * row_h + (row_h - side) * 0.75
        ax = fig.add_axes((left / width, bottom / height, (strip_w / s * side) / width, side / height))
        ax.imshow(strip, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        for c in range(k):
            x0 = c * (s + g) - 0.5
            ax.add_patch(Rectangle((x0, -0.5), s, s, fill=False, lw=0.6, color="k", clip_on=False))
            if captions:
                ax.text(x0 + s / 2, s + s * 0.04, captions[c], ha="center", va="top", fontsize=6)
        ax.text(-g, s / 2, label, rotation=90, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / height, va="top")
    return save(fig, path)


class _PlainLog(LogFormatter):
    """Labels the ticks matplotlib's log formatter would label, as plain numbers: 0.02, not 2×10⁻² (easier
    to read, and no mathtext to lay out)."""

    def __call__(self, x, pos=None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _log(ax, which: str, base: float = 10) -> None:
    """A log scale on the ``which`` ("x" or "y") axis of ``ax``, labelled by ``_PlainLog``."""
    getattr(ax, f"set_{which}scale")("log", base=base)
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(_PlainLog(base=base, labelOnlyBase=False))
    axis.set_minor_formatter(_PlainLog(base=base, labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _captions(store: Store, run: str, cond: str, n: int) -> list[str] | None:
    """"PSNR dB / SSIM" of the first ``n`` test images of ``run`` under ``cond`` (None if not stored)."""
    if not store.has(run, "test", cond, "psnr"):
        return None
    psnr, ssim = store.get(run, "test", cond, "psnr"), store.get(run, "test", cond, "ssim")
    return [f"{p:.1f} dB / {s:.3f}" for p, s in zip(psnr[:n], ssim[:n])]


def _band(ax, x, stats, color, ls="-", label=None, marker="o"):
    """Mean line and a ±1 std band (drawn only when some std is positive); stats: [(mean, std, ...)]."""
    mean = np.array([s[0] for s in stats])
    std = np.array([s[1] for s in stats])
    ax.plot(x, mean, ls, color=color, marker=marker, ms=3.5, label=label)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, lw=0)


# ---------------------------------------------------------------- the grid's figures

def loss_figures(runs_dir: Path, summary: dict, figures: Path, model: str) -> list[Path]:
    """Training and validation loss per epoch of the clean-trained runs of ``model`` (lowest seed)."""
    cells = runs_by_cell(summary)
    histories = {reg: read_history(runs_dir / cells[(model, reg, 0.0)])
                 for reg in REG_LABEL if (model, reg, 0.0) in cells}
    names, tag = FIGURES[model]["loss"], model_tag(summary, model)
    panels = [("train_loss", "training loss"), ("val_loss", "validation loss")]
    groups = [panels] if len(names) == 1 else [[p] for p in panels]
    written = []
    for name, group in zip(names, groups):
        fig = Figure(figsize=(5 * len(group), 3.4))
        axes = fig.subplots(1, len(group), squeeze=False)
        for ax, (key, title) in zip(axes[0], group):
            for reg, h in histories.items():
                ax.plot([r["epoch"] for r in h], [r[key] for r in h], marker=".",
                        label=row_name(REG_LABEL[reg], summary, [(model, reg, 0.0)]))
            ax.set(title=tagged(f"{MODEL_LABEL[model]} {title} (clean-trained)", tag), xlabel="epoch",
                   ylabel="MSE per pixel" if model == "ae" else "BCE + KL per image")
            _log(ax, "y")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(save(fig, figures / name))
    return written


def image_figures(runs_dir: Path, summary: dict, figures: Path, model: str, data: FigureData) -> list[Path]:
    """Reconstruction grid (clean inputs) and noisy-input grid for one model (lowest seed)."""
    index, arrays = data
    cells, store = runs_by_cell(summary), Store(runs_dir)
    sigma, cond, n = index["sigma"], index["condition"], index["n_show"]
    recon_rows = [("original", arrays["test"], None)]
    noise_rows = [("original", arrays["test"], None), (f"noisy σ={sigma:g}", arrays["noisy"], None)]
    for tr, tag in ((0.0, "clean-tr."), (sigma, "noise-tr.")):
        for reg in REG_LABEL:
            run = cells.get((model, reg, tr))
            if run is None:
                continue
            if tr == 0.0:
                recon_rows.append((REG_LABEL[reg], arrays[f"recon/{run}/clean"], _captions(store, run, "clean", n)))
            noise_rows.append((f"{REG_LABEL[reg]} {tag}", arrays[f"recon/{run}/noisy"], _captions(store, run, cond, n)))
    name, tag = MODEL_LABEL[model], model_tag(summary, model)
    caption = figure_caption(summary, model)
    caption = f"\n{caption}" if caption else ""
    return [
        _grid(recon_rows, figures / FIGURES[model]["recon"],
              tagged(f"{name}: test reconstructions per regularization (PSNR / SSIM per image){caption}", tag)),
        _grid(noise_rows, figures / FIGURES[model]["noise"],
              tagged(f"{name}: noisy inputs (σ={sigma:g}), clean- and noise-trained models{caption}", tag)),
    ]


def headline_figure(runs_dir: Path, summary: dict, data: FigureData, path: Path) -> Path:
    """The README's one figure: test faces, the unregularized AE and VAE on them (clean-trained), the same
    faces with noise, and the noise-trained AE and VAE on those (lowest seed; captions PSNR / SSIM)."""
    index, arrays = data
    cells, store = runs_by_cell(summary), Store(runs_dir)
    sigma, cond, n = index["sigma"], index["condition"], index["n_show"]
    shown = [(m, tr) for tr in (0.0, sigma) for m in MODEL_LABEL if (m, "none", tr) in cells]
    rows = [("original", arrays["test"], None)]
    for m, tr in shown:
        if tr == sigma and all(r[1] is not arrays["noisy"] for r in rows):
            rows.append((f"noisy σ={sigma:g}", arrays["noisy"], None))  # once, above the noise-trained rows
        run = cells[(m, "none", tr)]
        kind, c = ("clean", "clean") if tr == 0.0 else ("noisy", cond)
        rows.append((f"{MODEL_LABEL[m]} {'clean' if tr == 0 else 'noise'}-tr.", arrays[f"recon/{run}/{kind}"],
                     _captions(store, run, c, n)))
    runs = [r for r in summary["runs"] if (r["model"], r["reg"], r["noise_train"]) in {(m, "none", t) for m, t in shown}]
    return _grid(rows, path, tagged("Test faces: unregularized AE and VAE, clean and noisy inputs (PSNR / SSIM)",
                                    preview_status(summary.get("grid"), runs)))


def model_figures(runs_dir: str | Path, figures: str | Path, model: str, summary: dict | None = None,
                  data: FigureData | None = None) -> list[Path]:
    """Loss curves, reconstruction grid and noisy-input grid of one model (the notebooks call this)."""
    runs_dir, figures = Path(runs_dir), Path(figures)
    summary = summary or load_summary(runs_dir)
    data = data or read_figure_data(runs_dir)
    return loss_figures(runs_dir, summary, figures, model) + image_figures(runs_dir, summary, figures, model, data)


def generator_figures(runs_dir: Path, figures: Path, data: FigureData, label: str) -> list[Path]:
    """Prior samples, latent vs pixel interpolation between two test faces, and decode(mu) vs
    decode(sampled z) of the first test faces (captions: stored per-image PSNR / SSIM)."""
    index, arrays = data
    run, n = index["vae_run"], index["n_show"]
    if run is None:
        return []
    store, title = Store(runs_dir), f"VAE ({run})"
    prior = arrays["vae/prior"]
    return [
        _grid([("prior", prior[:n], None), ("prior", prior[n:], None)],
              figures / "vae_prior_samples.png", f"{title}: decoded draws z ~ N(0, I)\n{label}"),
        _grid([("latent", arrays["vae/latent"], None),
               ("pixels", arrays["vae/pixels"], [f"t={v:.2f}" for v in index["t"]])], figures / "vae_interpolation.png",
              f"{title}: two test faces, interpolated in latent (μ) and pixel space\n{label}"),
        _grid([("original", arrays["test"], None),
               ("decode(μ)", arrays[f"recon/{run}/clean"], _captions(store, run, "clean", n)),
               ("decode(z~q)", arrays["vae/sampled"], _captions(store, run, "sampled_z", n))],
              figures / "vae_mu_vs_sampled.png",
              f"{title}: posterior mean vs a sampled z (the original evaluation)\n{label}"),
    ]


# ---------------------------------------------------------------- the analysis figures

def noise_figure(rows: list[dict], kind: str, sigma: float, path: Path, label: str) -> Path:
    """Each metric vs noise level: rows AE/VAE, columns MSE/PSNR/SSIM; per regularization,
    clean-trained (solid) vs noise-trained (dashed); bands = ±1 std over seeds."""
    lv = levels(rows, kind)
    models = [m for m in ("ae", "vae") if any(r["model"] == m for r in rows)]
    fig = Figure(figsize=(13, 3.3 * len(models)))
    axes = fig.subplots(len(models), 3, squeeze=False)
    x = [level for level, _ in lv]
    for i, model in enumerate(models):
        for j, metric in enumerate(("mse", "psnr", "ssim")):
            ax = axes[i, j]
            aggs = [aggregate(rows, "test", c, metric) for _, c in lv]
            for reg in REG_LABEL:
                for tr, ls in ((0.0, "-"), (sigma, "--")):
                    stats = [a.get((model, reg, tr)) for a in aggs]
                    if all(stats):
                        _band(ax, x, stats, COLORS[reg], ls,
                              f"{REG_LABEL[reg]} {'clean' if tr == 0 else 'noise'}-tr." if i == j == 0 else None)
            ax.set(title=f"{MODEL_LABEL[model]}: test {metric.upper()}",
                   xlabel="Gaussian σ" if kind == "gaussian" else "salt-and-pepper fraction p")
            ax.grid(alpha=0.3)
    if models:
        axes[0, 0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Noise sweep ({'Gaussian' if kind == 'gaussian' else 'salt and pepper'}); {label}", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def denoising_figure(comps: list[dict], path: Path, label: str, sigma: float) -> Path:
    """Noise-trained minus clean-trained per test noise level (claims.json "denoising")."""
    models = [m for m in ("ae", "vae") if any(c["model"] == m for c in comps)]
    fig = Figure(figsize=(10, 3.3 * max(1, len(models))))
    axes = fig.subplots(max(1, len(models)), 2, squeeze=False)
    for i, model in enumerate(models):
        for j, metric in enumerate(METRICS):
            ax = axes[i, j]
            for reg in REG_LABEL:
                cs = sorted((c for c in comps if c["model"] == model and c["reg"] == reg and c["metric"] == metric),
                            key=lambda c: c["level"])
                if not cs:
                    continue
                x = [c["level"] for c in cs]
                _band(ax, x, [mean_std(c["per_seed_diff"])[:2] for c in cs], COLORS[reg], label=REG_LABEL[reg],
                      marker="")
                ax.scatter(x, [c["diff"] for c in cs], s=22, color=COLORS[reg],
                           facecolors=[COLORS[reg] if c["significant"] else "white" for c in cs], zorder=3)
            ax.axhline(0, color="k", lw=0.8)
            ax.set(title=f"{MODEL_LABEL[model]}: Δ test {metric.upper()}, σ={sigma:g}-trained − clean-trained",
                   xlabel="Gaussian σ of the test inputs")
            ax.grid(alpha=0.3)
            ax.title.set_fontsize(9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Denoising training: > 0 helps; filled = significant (Wilcoxon, Holm); {label}", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def sweep_figure(rows: list[dict], sweeps: list[str], path: Path, label: str, reference: dict | None = None) -> Path:
    """Metric vs parameter for one or more sweeps: validation (dashed) and test (solid), bands over seeds."""
    models_of = {s: sorted({r["model"] for r in rows if r["sweep"] == s}) for s in sweeps}
    groups = [(s, model) for s in sweeps for model in models_of[s]]
    fig = Figure(figsize=(10, 3.1 * max(1, len(groups))))
    axes = fig.subplots(max(1, len(groups)), 2, squeeze=False)
    for i, (s, model) in enumerate(groups):
        pts = [r for r in rows if r["sweep"] == s and r["model"] == model]
        values = sorted({r["value"] for r in pts})
        for j, metric in enumerate(("psnr", "ssim")):
            ax = axes[i, j]
            for split, ls in (("test", "-"), ("val", "--")):
                stats = [mean_std([r["metrics"][split]["clean"][metric] for r in pts if r["value"] == v])
                         for v in values]
                _band(ax, values, stats, "C0" if split == "test" else "C1", ls,
                      "test" if split == "test" else "validation")
            if reference and (model, metric) in reference:
                ax.axhline(reference[(model, metric)], color="gray", lw=0.8, ls=":", label="no regularization (test)")
            _log(ax, "x", base=10 if s in ("l1", "l2", "beta") else 2)
            ax.set(title=f"{MODEL_LABEL[model]}: {metric.upper()} vs {SWEEP_LABEL[s]}", xlabel=SWEEP_LABEL[s])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"Parameter sweep (clean-trained, clean inputs); {label}", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------- rate-distortion

def rd_figures(runs_dir: str | Path, figures: str | Path, tag: str = "") -> list[Path]:
    """``rd_psnr.png`` and ``rd_ssim.png``: every method in one figure each (log bpp axis); none
    when the grid has no ``rd/``. ``tag``: the grid's preview tag, shown in the title."""
    loaded = load_rd(runs_dir)
    if loaded is None:
        return []
    index, curves = loaded
    written = []
    for metric, name in zip(("psnr", "ssim"), RD_FIGURES):
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.subplots()
        for key, c in curves.items():
            r = c["results"]
            if key == "mean":
                ax.axhline(r[metric][0], color="0.4", ls=":", label=f"{c['name']} (0 B)")
                continue
            color, marker = RD_STYLE.get(key, ("0.5", "."))
            variant = key not in RD_STYLE
            if variant:
                color = RD_STYLE[key.split("-")[0]][0]
            ax.plot(r["bpp"], r[metric], marker=marker, ms=3 if variant else 4, color=color,
                    ls="--" if variant else "-", lw=0.9 if variant else 1.5, alpha=0.7 if variant else 1,
                    label=c["name"])
        _log(ax, "x")
        ax.set(xlabel="bits per pixel (real bytes × 8 / pixels)", ylabel="PSNR (dB)" if metric == "psnr" else "SSIM",
               title=tagged(f"{metric.upper()} vs rate: {index['dataset']}, preset {index['preset']}, "
                            f"{index['n_test']} test images", tag))
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(save(fig, Path(figures) / name))
    return written
