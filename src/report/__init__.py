"""Figures, tables and README blocks, from the results store only.

Reads what the computing steps stored (``results`` is its one reader): ``summary.json``, each
run's ``history.csv`` and per-image arrays, ``figure_data.npz`` (the shown images), noise
sweeps, sweeps, ``claims.json`` and ``rd/*.json``. It imports no torch and loads no checkpoint,
so a weight-free results bundle redraws every figure.

    figures.py   every PNG (written atomically)
    tables.py    every Markdown table, and the one number formatter
    readme.py    the README sections and the one block replacer
    style.py     file names, labels, colours, digits
    vae.py       the VAE diagnosed: KL per dimension, its rate-distortion plane, tables, a paragraph
"""
from __future__ import annotations

import os
from pathlib import Path

from ..results import (MODEL_LABEL, aggregate, is_analysis, load_rd, load_summary, noise_runs, noise_sigma,
                       preset_of, read_claims, read_figure_data, sweep_rows)
from ..stats import METRICS
from ..utils import UserError, write_text
from .figures import (denoising_figure, generator_figures, model_figures, noise_figure, rd_figures,
                      sweep_figure)
from .readme import (ANALYSIS_MARKERS, CONCLUSION_MARKERS, RESULTS_MARKERS, analysis_markdown, conclusions_markdown,
                     label, rd_markdown, replace_block, results_markdown)
from .style import SWEEP_FIGURES
from .tables import bytes_notes
from .vae import vae_figures, vae_markdown


def _summary(runs_dir: Path, summary: dict | None) -> dict:
    summary = summary or load_summary(runs_dir)
    if not summary["runs"]:
        raise UserError(f"{runs_dir}/summary.json lists no finished runs")
    return summary


def _models(summary: dict) -> list[str]:
    return sorted({r["model"] for r in summary["runs"]}, key=list(MODEL_LABEL).index)


def _relative(figures: Path, readme: Path | None, runs_dir: Path) -> str:
    """The figure folder as the Markdown (README, else a file in runs_dir) links it."""
    return os.path.relpath(figures, readme.parent if readme else runs_dir).replace(os.sep, "/")


REPORT_MD = "REPORT.md"  # the report of a grid, in its own folder; the README changes only when published


def report(runs_dir: str | Path, figures: str | Path | None = None, readme: str | Path | None = None) -> list[Path]:
    """Write every figure (default: ``runs_dir/Figures``), ``runs_dir/REPORT.md`` and, given a
    ``readme``, its generated blocks (that is publishing: ``python -m src report DIR --publish``).

    The grids of the analysis presets get ``analysis_report`` instead (own README blocks).
    """
    runs_dir = Path(runs_dir)
    figures = Path(figures) if figures else runs_dir / "Figures"
    readme = Path(readme) if readme else None
    summary = _summary(runs_dir, None)
    if is_analysis(summary):
        return analysis_report(runs_dir, figures, readme, summary, markdown=REPORT_MD)
    data = read_figure_data(runs_dir)
    written: list[Path] = []
    for model in _models(summary):
        written += model_figures(runs_dir, figures, model, summary, data)
    written += rd_figures(runs_dir, figures)  # only when runs_dir/rd exists (python -m src rd)
    rel, rd, sweeps = _relative(figures, readme, runs_dir), load_rd(runs_dir), sweep_rows(runs_dir)
    diagnosed = vae_figures(runs_dir, figures, summary, sweeps, label(summary))
    written += diagnosed
    section = (results_markdown(summary, rel, bytes_notes(rd)) + rd_markdown(rd, rel) + "\n"
               + vae_markdown(summary, rd, sweeps, rel, diagnosed))
    written.append(write_text(runs_dir / REPORT_MD, section + "\n"))
    if readme:
        replace_block(readme, RESULTS_MARKERS, section, "## Results")
    return written


def analysis_report(runs_dir: str | Path, figures: str | Path, readme: str | Path | None = None,
                    summary: dict | None = None, grid_figures: bool = True, markdown: str = "analysis.md") -> list[Path]:
    """Analysis figures in ``figures/<preset>/``, ``runs_dir/<markdown>``, and (for the analysis
    presets, given a README) its analysis and conclusions blocks; needs ``claims.json``.

    With ``grid_figures``, the grid's own figures (``figures.model_figures``) go to the same folder.
    """
    runs_dir = Path(runs_dir)
    readme = Path(readme) if readme else None
    summary = _summary(runs_dir, summary)
    sub = Path(figures) / (preset_of(summary.get("grid")).get("name") or runs_dir.name)
    sigma, lab = noise_sigma(summary.get("grid")), label(summary)
    claims, data = read_claims(runs_dir), read_figure_data(runs_dir)
    written: list[Path] = []
    if grid_figures:
        for model in _models(summary):
            written += model_figures(runs_dir, sub, model, summary, data)
    rows = noise_runs(runs_dir, summary)
    if rows:
        written.append(noise_figure(rows, "gaussian", sigma, sub / "noise_sweep_gaussian.png", lab))
        written.append(noise_figure(rows, "s&p", sigma, sub / "noise_sweep_saltpepper.png", lab))
    if claims["denoising"]:
        written.append(denoising_figure(claims["denoising"], sub / "denoising.png", lab, sigma))
    sweeps = sweep_rows(runs_dir)
    ref = {(m, k): v[0] for m in MODEL_LABEL for k in METRICS
           for key, v in aggregate(summary["runs"], "test", "clean", k).items() if key == (m, "none", 0.0)}
    for name, names in SWEEP_FIGURES.items():
        if any(r["sweep"] in names for r in sweeps):
            written.append(sweep_figure(sweeps, list(names), sub / f"{name}.png", lab,
                                          ref if name == "sweep_lambda" else None))
    written += generator_figures(runs_dir, sub, data, lab)
    diagnosed = vae_figures(runs_dir, sub, summary, sweeps, lab)
    written += diagnosed
    rel = _relative(sub, readme, runs_dir)
    section = (analysis_markdown(runs_dir, summary, rel, rows, claims, sweeps) + "\n"
               + vae_markdown(summary, load_rd(runs_dir), sweeps, rel, diagnosed))
    conclusions = conclusions_markdown(claims, lab)
    written.append(write_text(runs_dir / markdown, section + "\n\n## Conclusions\n\n" + conclusions + "\n"))
    if readme and is_analysis(summary):
        replace_block(readme, ANALYSIS_MARKERS, section, "## Parameter analysis")
        replace_block(readme, CONCLUSION_MARKERS, conclusions, "## Conclusions")
    return written
