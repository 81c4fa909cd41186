"""The study's steps as library functions: ``reproduce``, ``report``, ``analyze`` and ``rd``.

The CLI (``python -m src reproduce | report | analyze | rd``) and both notebooks call these; nothing
else chains the steps. Each returns a dict a notebook can show::

    reproduce(preset, out)  the grid (experiments.run_grid), then the analysis presets' sweeps
                            (sweeps.run_analysis) or the other presets' rate-distortion curves, then report
    report(out)             diagnostics of runs that predate them, figure data, the claims of an analysis grid,
                            figures, OUT/REPORT.md [README headline, docs/results.md]
    analyze(out)            noise sweep of any finished grid, diagnostics, figure data, claims, analysis figures
                            and tables
    rd(out)                 rate-distortion curves of a finished grid (OUT/rd/)

Whether a grid is an analysis grid is ``config.analysis_mode`` of its preset's name, here and in the report.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import distributed
from .claims import check_claims
from .config import MODEL_NAMES, PRESETS, RD_PRESETS, Preset, RDConfig, analysis_mode, set_fields
from .eta import REPORT_S, After, log_event
from .experiments import ensure_diagnostics, run_grid
from .figdata import write_figure_data
from .piece import Piece, run_filter
from .rd import run_rd
from .report import REPORT_MD, analysis_report
from .report import report as write_report
from .report.headline import check_publishable
from .results import is_analysis, load_summary, preset_of
from .sweeps import analysis_after, noise_sweep, run_analysis
from .train import pick_device
from .utils import UserError

STEPS = ("grid", "sweeps", "rd", "report")  # what reproduce does, in order (sweeps: analysis presets; rd: the others)


def study_preset(preset: str | Preset, seeds: int | Sequence[int] | None = None,
                 settings: Sequence[str] = ()) -> Preset:
    """A preset (by name, or as is) with its seeds replaced and ``SECTION.FIELD=VALUE`` settings applied.

    ``seeds``: a count N (seeds 0..N-1) or the seeds themselves; None keeps the preset's.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    if seeds is not None:
        seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
        if not seeds or min(seeds) < 0:
            raise UserError(f"seeds must be a count >= 1 or seeds >= 0, got {seeds}")
        preset = replace(preset, seeds=seeds)
    return set_fields(preset, list(settings))


def outputs(out: str | Path, publish: bool = False, figures: str | Path | None = None,
            readme: str | Path | None = None) -> tuple[Path, Path | None]:
    """(figure folder, README or None): the grid folder's own, unless publishing to the repository's."""
    figures = Path(figures) if figures else (Path("Figures") if publish else Path(out) / "Figures")
    readme = readme if readme is not None else ("README.md" if publish else None)
    return figures, Path(readme) if readme else None


def reproduce(preset: str | Preset, out: str | Path | None = None, *, data: str | None = None, device: str = "auto",
              models: Sequence[str] = MODEL_NAMES, seeds: int | Sequence[int] | None = None,
              settings: Sequence[str] = (), parallel_runs: int | None = None, rd_sweep: str | None = None,
              steps: Sequence[str] = STEPS, figures: str | Path | None = None, readme: str | Path | None = None,
              runs: Sequence[str] | None = None, budget_s: float | None = None, images_per_s: float | None = None,
              bundle: str | Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """The study in ``out`` (default ``runs/<preset>``): what is finished already is never redone.

    Args:
        preset, seeds, settings: the grid (``study_preset``).
        models: the models of the grid trained here (``run_grid``); the summary lists every finished run.
        parallel_runs: runs of one model trained together (``experiments.run_configs``).
        rd_sweep: the rate-distortion sweep (a key of ``RD_PRESETS``; default: the preset's name; "none": no curves).
        steps: a subset of ``STEPS``; the analysis presets skip "rd", the others "sweeps".
        figures, readme: where the report goes (``outputs``; default: ``out/Figures``, no README).
        runs: shell patterns of run names; only the grid's runs that match any are trained (None: all).
        budget_s, images_per_s, bundle: a piece of the protocol (``piece.Piece``, docs/gpu.md): work that
            cannot finish within ``budget_s`` is not started, and each finished run's weight-free files
            are written to ``bundle`` (a folder or .tar.gz) the moment it is evaluated.

    Returns {"out", "preset", "summary", "runs", "converged", "rd" (index or None), "report" (``report``'s
    dict, None if not reported), "figures" ({file name: path}), "seconds"}. Under torchrun every rank calls
    this; rank 0 alone computes the curves and writes the report.
    """
    t0 = time.perf_counter()
    preset = study_preset(preset, seeds, settings)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise UserError(f"unknown step(s) {sorted(unknown)}; choose from {list(STEPS)}")
    if parallel_runs is not None and parallel_runs < 0:
        raise UserError(f"--parallel-runs must be >= 0 (0 = all runs of a model together), got {parallel_runs}")
    out = Path(out or f"runs/{preset.name}")
    analysis = analysis_mode(preset.name)
    if readme and "report" in steps and not analysis:  # refused now, not after the training
        check_publishable(out, Path(readme), preset.name)
    piece = Piece(out, bundle, budget_s, images_per_s, log=log)
    sweep = (RD_PRESETS.get(rd_sweep or preset.name, RDConfig())
             if not analysis and "rd" in steps and rd_sweep != "none" else None)
    after = (analysis_after(preset, "report" in steps, device) if analysis and "sweeps" in steps
             else After(sweep, "report" in steps))  # what the grid's ETA counts after the grid
    summary = run_grid(preset, out, data_root=data, device=device, models=tuple(models), progress=progress,
                       log=log, parallel_runs=parallel_runs, budget=piece.budget, on_done=piece.on_done,
                       only=run_filter(runs), after=after) if "grid" in steps else load_summary(out)
    if analysis and "sweeps" in steps:  # every rank: the sweeps are shared like the grid's runs
        run_analysis(preset, out, data_root=data, device=device, progress=progress, log=log,
                     report="report" in steps)
    result: dict[str, Any] = {"out": out, "preset": preset, "summary": summary, "rd": None, "report": None,
                              "figures": {}}
    if distributed.is_main():  # under torchrun, rank 0 alone computes the curves and writes the report
        with distributed.one_at_a_time(out / ".lock.report", "curves and report"):  # another launch of this grid
            if not summary["runs"] and piece.refused:  # the budget started nothing: nothing to draw
                steps = [s for s in steps if s not in ("rd", "report")]
                log(f"reproduce: no run finished within the budget in {out}, so no curves and no report")
            if not analysis and "rd" in steps and rd_sweep != "none":  # the analysis report has no rd section
                result["rd"] = rd(out, rd_sweep or preset.name, device=device, force=False, progress=progress,
                                  log=log)
            if "report" in steps:
                log_event(out, "progress", REPORT_S, "report")
                result["report"] = report(out, figures, readme, log=log)
                result["summary"] = result["report"]["summary"]
                result["figures"] = result["report"]["figures"]
            piece.finish()
        log_event(out, "end", 0.0, "reproduce done")  # progress.log: benchmarks/eta_error.py measures the ETA on it
    runs = result["summary"]["runs"]
    result.update(runs=len(runs), converged=sum(bool((r.get("convergence") or {}).get("converged")) for r in runs),
                  seconds=time.perf_counter() - t0)
    return result


def rd(out: str | Path, sweep: str | None = None, coder: str = "auto", device: str = "auto", force: bool = True,
       progress: bool | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Rate-distortion curves of a finished grid into ``out/rd`` (``rd.run_rd``); returns its index.

    ``sweep``: a key of ``RD_PRESETS`` (default: the grid's preset); ``force=False`` keeps current curves;
    ``progress``: the bars of the extra latent sizes' training (None: as the grid's runs had them).
    """
    out = Path(out)
    sweep = sweep or preset_of(load_summary(out).get("grid")).get("name", "quick")
    index = run_rd(out, replace(RD_PRESETS.get(sweep, RDConfig()), coder=coder), device=pick_device(device),
                   force=force, progress=progress, log=log)
    log(f"rd: {len(index['methods'])} curves on {index['n_test']} test images in {out / 'rd'}")
    return index


def _figures(written: list[Path]) -> dict[str, Path]:
    return {p.name: p for p in written if p.suffix == ".png"}


def report(out: str | Path, figures: str | Path | None = None, readme: str | Path | None = None,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Figures and tables of a grid from its stored results (``report.report``), after its figure data
    (from the weights; kept as is in a weight-free bundle) and, for an analysis grid, its claims.

    ``figures``: the figure folder (default ``out/Figures``; an analysis grid's go to its ``<preset>/``
    subfolder); ``readme``: a README whose headline block is replaced, with docs/results.md beside it
    (publishing), or None.
    Returns {"summary", "written" (paths), "figures" ({file name: path}), "markdown" (OUT/REPORT.md)}.
    """
    out = Path(out)
    figures, readme = outputs(out, figures=figures, readme=readme)
    load_summary(out)  # a folder without a grid says so before anything is computed
    ensure_diagnostics(out, log=lambda s: log(f"report: {s}"))  # runs evaluated before the diagnostics: once
    summary = load_summary(out)
    write_figure_data(out, summary)
    if is_analysis(summary):
        check_claims(out, summary)  # its verdicts and paired tables, read by the analysis report
    written = write_report(out, figures, readme)
    log(f"report: {len(written)} files written under {figures} and {out / REPORT_MD}"
        + (f"; {readme} and {readme.parent / 'docs' / 'results.md'} updated" if readme else ""))
    return {"summary": summary, "written": written, "figures": _figures(written), "markdown": out / REPORT_MD}


def analyze(out: str | Path, figures: str | Path | None = None, device: str = "auto",
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """The noise sweep of a finished grid (evaluation only), its figure data, claims, analysis figures
    (in ``figures/<preset>/``, default ``out/Figures``) and ``out/analysis.md``.

    Returns {"claims", "written" (paths), "figures" ({file name: path}), "markdown" (OUT/analysis.md)}.
    """
    out = Path(out)
    noise_sweep(out, pick_device(device), log)
    ensure_diagnostics(out, log=lambda s: log(f"analyze: {s}"), device=pick_device(device))
    write_figure_data(out)
    claims = check_claims(out)
    written = analysis_report(out, figures or out / "Figures", readme=None, grid_figures=False)
    log(f"analyze: {len(written)} files written; tables and verdicts in {out / 'analysis.md'}")
    return {"claims": claims, "written": written, "figures": _figures(written), "markdown": out / "analysis.md"}
