"""Noise sweeps and parameter sweeps of a finished grid (finished work is never redone).

    noise_sweep(OUT)      every finished run of a grid under Gaussian sigma in {0, .05, .1, .2, .3}
                          and salt-and-pepper p in {.01, .05, .1}: RUN/noise_sweep.npz (per image),
                          then RUN/noise_sweep.json (means and its seconds; written last, it marks
                          the run done);
                          test split only (the grid's metrics.json has val and test at its sigma).
                          VAE runs also get decode(sampled z) metrics ("sampled_z").
    run_sweeps(plan, OUT) lambda (L1, L2), VAE latent size and beta, AE bottleneck channels:
                          OUT/sweeps/<run>/ through experiments.run_configs, indexed by
                          OUT/sweeps/sweeps.json. A point equal to a grid cell reuses that run.
    run_analysis(...)     both, for the analysis presets (after ``experiments.run_grid``).
    analysis_after(...)   both as the grid's ETA sees them (``eta.After``).

The verdicts are ``claims.check_claims``; the figures and tables are ``report``'s.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import distributed
from . import noise
from .config import ANALYSIS_PRESETS, DataConfig, Preset, RunConfig, config_key
from .data import load_dataset, resolved
from .evaluation import Condition, evaluate, load_run, sampled_z_metrics, summarize
from .distributed import grid_lock
from .eta import After, Calibration, after_seconds, clock, log_event
from .experiments import grid_configs, grid_id, run_configs
from .results import (NOISE_JSON, NOISE_NPZ, SWEEPS_JSON, finished_runs, noise_sigma,
                      read_config, read_grid, read_metrics, read_split, run_data)
from .runs import run_name
from .train import pick_device
from .utils import UserError, read_json, save_npz, write_json

GAUSSIAN_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3)
SP_FRACTIONS = (0.01, 0.05, 0.1)


@dataclass(frozen=True)
class SweepPlan:
    """Parameter sweeps of an analysis preset; every point is a clean-trained run."""
    lambdas: tuple[tuple[str, str, tuple[float, ...]], ...]  # (model, "l1" | "l2", strengths)
    vae_latent: tuple[int, ...]     # VAE latent dimensions (no regularization)
    vae_beta: tuple[float, ...]     # VAE KL weights (no regularization)
    ae_latent: tuple[int, ...]      # AE bottleneck channels (no regularization)
    n_seeds: int | None = 1         # seeds per point: the grid's first n (None = all of them)


# Why the lambda grids differ per model: the AE's loss is a per-pixel mean (~1e-2) and its ~700
# weights have sum|w| ~ 60, so lambda_1 = 1e-5 already adds ~5% to the loss; the VAE's loss is
# summed per image (~2e3 at 64x64, ~8e3 at 128x128) over ~4e6-1.7e7 weights, so 1e-5 changes
# it by ~1e-4 relative and "too strong" lies 3-5 decades higher. Each grid holds the grid
# default 1e-5 (reused, not retrained).
_PLAN = SweepPlan(
    lambdas=(("ae", "l1", (1e-6, 1e-5, 1e-4, 1e-3)), ("ae", "l2", (1e-5, 1e-4, 1e-3, 1e-2)),
             ("vae", "l1", (1e-5, 1e-3, 1e-2, 1e-1)), ("vae", "l2", (1e-5, 1e-1, 1.0, 10.0))),
    vae_latent=(16, 64, 200, 512), vae_beta=(0.1, 0.5, 1.0, 4.0), ae_latent=(1, 2, 4, 16))
SWEEP_PLANS = dict(zip(ANALYSIS_PRESETS, (_PLAN, replace(_PLAN, n_seeds=None))))


# ---------------------------------------------------------------- 1. noise sweeps

def sweep_conditions(sigma: float = 0.1) -> list[Condition]:
    """Clean, the grid's sigma second, then the other levels.

    The noise of a condition is keyed by its name (``noise.eval_generator``), so the grid's sigma
    gives the very noisy images of the grid's metrics.json, and every model sees the same ones.
    """
    conds: list[Condition] = [("clean", 0.0), ("gaussian", sigma)]
    conds += [("gaussian", s) for s in GAUSSIAN_SIGMAS if s not in (0.0, sigma)]
    return conds + [("s&p", p) for p in SP_FRACTIONS]


def _sweep_done(run_dir: Path, names: list[str]) -> bool:
    try:
        return read_json(run_dir / NOISE_JSON).get("conditions") == names and (run_dir / NOISE_NPZ).exists()
    except (FileNotFoundError, ValueError, AttributeError):
        return False


def evaluate_noise(run_dir: str | Path, images: np.ndarray, conditions: list[Condition],
                   device: str | torch.device = "cpu", splits: tuple[str, ...] = ("test",)) -> dict[str, Any]:
    """One run under every condition on ``splits`` of its stored split (the analysis uses test only:
    half the cost of val + test); writes noise_sweep.npz, then noise_sweep.json."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    model, cfg = load_run(run_dir, device)
    split = read_split(run_dir, len(images))
    names = [noise.condition_name(k, v) for k, v in conditions]
    result: dict[str, Any] = {"run": run_dir.name, "model": cfg.model.name, "reg": cfg.reg.kind,
                              "noise_train": cfg.train.noise_train, "seed": cfg.train.seed,
                              "conditions": names, "levels": {n: [k, v] for n, (k, v) in zip(names, conditions)}}
    arrays = {}
    for s in splits:
        per = evaluate(model, images[split[s]], list(conditions), seed=cfg.train.seed, device=device)
        if cfg.model.name == "vae":
            per["sampled_z"] = sampled_z_metrics(model, images[split[s]], cfg.train.seed, device)
        result[s] = {c: summarize(v) for c, v in per.items()}
        arrays.update({f"{s}/{c}/{k}": v for c, vals in per.items() for k, v in vals.items()})
    save_npz(run_dir / NOISE_NPZ, arrays)
    result["per_image"] = NOISE_NPZ
    result["seconds"] = round(time.perf_counter() - t0, 3)  # calibrates the ETA of the next noise sweeps
    write_json(run_dir / NOISE_JSON, result)
    return result


def noise_sweep(runs_dir: str | Path, device: str | torch.device = "cpu", log: Callable[[str], None] = print,
                sigma: float | None = None, after: After | None = None) -> list[str]:
    """Evaluate every finished run of ``runs_dir`` under ``sweep_conditions``; returns the runs done now.

    Each run's line gives the ETA of the rest of the noise sweep and of ``after`` (what follows it: the
    parameter sweeps, the report), and is appended to ``runs_dir/progress.log``.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir} is not a folder; run `python -m src reproduce --out {runs_dir}` first")
    dirs = finished_runs(runs_dir)
    if not dirs:
        raise UserError(f"{runs_dir} holds no finished runs; run `python -m src reproduce --out {runs_dir}` first")
    conds = sweep_conditions(noise_sigma(read_grid(runs_dir)) if sigma is None else sigma)
    names = [noise.condition_name(k, v) for k, v in conds]
    todo = [d for d in dirs if not _sweep_done(d, names)]
    mine = distributed.my_share(todo)  # under torchrun: this rank's part of rank 0's list
    log(f"noise sweep ({', '.join(names)}): {len(dirs) - len(todo)} of {len(dirs)} runs already done; "
        f"{len(todo)} to do")
    datasets: dict[str, np.ndarray] = {}
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        # Evaluation ops are small (SSIM goes 4 images at a time): on a 2-core machine shared with
        # other jobs, 2 intra-op threads took 68 s per run where 1 took 3 s (measured, load ~7).
        torch.set_num_threads(1)
    runs = [(d, RunConfig.from_dict(read_config(d))) for d in dirs]
    after = replace(after or After(report=False), noise_sweep=True)
    try:
        for i, d in enumerate(mine, 1):
            images = run_data(d, datasets)["all"]
            left = after_seconds(Calibration.from_runs(runs + list(after.timed)), after, runs, runs_dir)
            if distributed.is_main():
                log_event(runs_dir, "progress", left, f"noise sweep: {d.name}")
            log(f"{distributed.tag()}[noise sweep {i}/{len(mine)}] {d.name} "
                f"(ETA {'?' if left is None else clock(left)})")
            evaluate_noise(d, images, conds, device)
    finally:
        torch.set_num_threads(threads)
    distributed.barrier()
    return [d.name for d in todo]


# ---------------------------------------------------------------- 2. parameter sweeps

DISPLAY = {("train", "device"), ("train", "progress"), ("train", "keep_last")}  # how a run is shown and kept, not what it is


def sweep_points(plan: SweepPlan, preset: Preset, data_cfg: DataConfig, device: str = "auto",
                 progress: bool = True) -> list[dict[str, Any]]:
    """Every sweep point: {"sweep", "model", "value", "seed", "run" (path under OUT), "config"}.

    A point whose configuration equals a grid cell's points at that grid run instead of
    training a copy of it.
    """
    grid = grid_configs(preset, data_cfg, device, progress)
    by_cfg = {config_key(c, DISPLAY): name for name, c in grid.items()}
    seeds = preset.seeds if plan.n_seeds is None else preset.seeds[:plan.n_seeds]
    specs = []  # (sweep, model, value, base reg, function making the config from the grid base)
    for model, kind, values in plan.lambdas:
        for v in values:
            specs.append((kind, model, v, kind, lambda c, v=v, kind=kind: replace(c, reg=replace(c.reg, **{kind: v}))))
    for v in plan.vae_latent:
        specs.append(("latent", "vae", v, "none", lambda c, v=v: replace(c, model=replace(c.model, vae_latent=v))))
    for v in plan.vae_beta:
        specs.append(("beta", "vae", v, "none", lambda c, v=v: replace(c, train=replace(c.train, beta=v))))
    for v in plan.ae_latent:
        specs.append(("channels", "ae", v, "none", lambda c, v=v: replace(c, model=replace(c.model, ae_latent=v))))
    points = []
    for sweep, model, value, reg, make in specs:
        for seed in seeds:
            cfg = make(grid[run_name(model, reg, 0.0, seed)])
            run = by_cfg.get(config_key(cfg, DISPLAY)) or f"sweeps/{model}-{sweep}_{value:g}-s{seed}"
            points.append({"sweep": sweep, "model": model, "value": value, "seed": seed, "run": run, "config": cfg})
    return points


def sweep_runs(points: list[dict[str, Any]]) -> dict[str, RunConfig]:
    """{folder name under OUT/sweeps: config} of the points that train a run of their own."""
    return {p["run"].split("/", 1)[1]: p["config"] for p in points if p["run"].startswith("sweeps/")}


def analysis_after(preset: Preset, report: bool = True, device: str = "auto", plan: SweepPlan | None = None) -> After:
    """What follows an analysis preset's grid, for the grid's ETA: the noise sweep of each grid run, the
    parameter sweeps' runs (``plan``, default: the preset's entry of ``SWEEP_PLANS``), then the report if
    ``report``."""
    plan = plan or SWEEP_PLANS.get(preset.name)
    runs = sweep_runs(sweep_points(plan, preset, preset.data, device)) if plan else {}
    return After(report=report, noise_sweep=True, sweeps=tuple((f"sweeps/{n}", c) for n, c in runs.items()))


def run_sweeps(plan: SweepPlan, preset: Preset, out: Path, images: np.ndarray, data_cfg: DataConfig,
               device: torch.device, progress: bool = True, log: Callable[[str], None] = print,
               report: bool = True) -> dict[str, Any]:
    """Train and evaluate the unfinished sweep points into ``out/sweeps``; write ``sweeps.json``.

    Their ETA is calibrated on the grid's finished runs too, counts the report when ``report``, and its lines
    go to ``out/progress.log`` with the grid's.
    """
    points = sweep_points(plan, preset, data_cfg, str(device), progress)
    missing = sorted({p["run"] for p in points if "/" not in p["run"] and read_metrics(out / p["run"]) is None})
    if missing:
        raise UserError(f"the sweeps reuse grid runs that are not finished in {out}: {missing[:3]}; "
                        f"run `python -m src reproduce --out {out}` first")
    grid = tuple((d, RunConfig.from_dict(read_config(d))) for d in finished_runs(out))
    run_configs(sweep_runs(points), out / "sweeps", images, [("clean", 0.0), ("gaussian", preset.noise_sigma)],
                device, log, after=After(report=report, timed=grid, log_dir=out))
    index = {"plan": asdict(plan), "points": [{k: v for k, v in p.items() if k != "config"} for p in points]}
    if distributed.is_main():
        write_json(out / SWEEPS_JSON, index)
    return index


def run_analysis(preset: Preset, out: str | Path, data_root: str | None = None, device: str = "auto",
                 progress: bool = True, log: Callable[[str], None] = print, plan: SweepPlan | None = None,
                 report: bool = True) -> None:
    """After ``run_grid``: the noise sweep of every grid run, then the parameter sweeps
    (``plan``, default: the preset's entry of ``SWEEP_PLANS``); ``report``: whether the sweeps' ETA counts
    a report after them."""
    out = Path(out)
    plan = plan or SWEEP_PLANS.get(preset.name)
    data_cfg = replace(preset.data, root=data_root)  # as run_grid builds it
    distributed.setup(device)  # under torchrun every rank calls this: the sweeps are shared like the grid
    main = distributed.is_main()
    faces = distributed.main_first(lambda: load_dataset(data_cfg, progress=progress and main,
                                                        log=log if main else lambda _: None))
    data_cfg = resolved(data_cfg, faces)  # as run_grid stores it, so grid runs match
    with grid_lock(out, grid_id(preset, data_cfg)):
        dev = pick_device(device)
        noise_sweep(out, dev, log, preset.noise_sigma, analysis_after(preset, report, device, plan))
        if plan is not None:
            run_sweeps(plan, preset, out, faces.images, data_cfg, dev, progress and not distributed.tag(), log, report)
