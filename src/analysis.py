"""Parameter analysis with uncertainty: noise sweeps, parameter sweeps, seed aggregation,
paired tests, and the checker of the original study's four claims.

Stages, each reading and writing stored files only (finished work is never redone)::

    noise_sweep(OUT)      every finished run of a grid under Gaussian sigma in {0, .05, .1, .2, .3}
                          and salt-and-pepper p in {.01, .05, .1}: RUN/noise_sweep.npz (per image),
                          then RUN/noise_sweep.json (means; written last, it marks the run done);
                          test split only (the grid's metrics.json has val and test at its sigma).
                          VAE runs also get decode(sampled z) metrics ("sampled_z").
    run_sweeps(plan, OUT) lambda (L1, L2), VAE latent size and beta, AE bottleneck channels:
                          OUT/sweeps/<run>/ through experiments.run_configs, indexed by
                          OUT/sweeps/sweeps.json. A point equal to a grid cell reuses that run.
    check_claims(OUT)     paired tests on per-image arrays -> OUT/claims.json
    analysis_report(...)  figures (FIGURES/<preset>/), OUT/analysis.md, README blocks

Statistics. Per-image metrics of two models are paired (same test images, and the same
noisy inputs: evaluation noise depends only on the training seed and the condition).
With several seeds, each image's value is first averaged over the seeds both cells share.
A difference is called *significant* when (1) the two-sided Wilcoxon signed-rank test on
the per-image differences (``scipy.stats.wilcoxon``) gives a p-value below ``ALPHA`` after
Holm-Bonferroni correction over all tests of the same family (one claim, or one table),
and (2) with two or more seeds, the mean difference has the same sign in every seed and the
mean ± std intervals of the two cells over seeds do not overlap (the per-image test alone sees
only test-image variation, not training randomness).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from . import metrics as M
from . import noise
from . import report as R
from .data import DataConfig, load_dataset, resolved, split_indices, to_float
from .experiments import Preset, grid_configs, grid_lock, run_configs, run_name
from .regularization import KINDS
from .evaluation import EVAL_BATCH, Condition, evaluate, load_run, summarize
from .results import read_history, read_metrics
from .train import RunConfig
from .utils import UserError, read_json, save_npz, write_json, write_text

ALPHA = 0.05                                # significance level of every family of tests
GAUSSIAN_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3)
SP_FRACTIONS = (0.01, 0.05, 0.1)
NOISE_JSON, NOISE_NPZ = "noise_sweep.json", "noise_sweep.npz"
METRICS = ("psnr", "ssim")                  # higher is better for both; MSE is shown, not tested
CONFIRMED, REFUTED, INCONCLUSIVE = "confirmed", "refuted", "inconclusive"
TEST_NAME = ("two-sided Wilcoxon signed-rank test on paired per-image differences (test split; per-image "
             f"values averaged over seeds), Holm-Bonferroni correction within each family, alpha = {ALPHA}; "
             "with 2+ seeds, also the same sign of the difference in every seed and non-overlapping "
             "mean ± std intervals over seeds")
ONE_SEED = ("**One seed:** the per-image test compares these trained models, not the settings; the spread "
            "from training randomness (init, shuffling) is not measured, so a difference between two single "
            "runs can be called significant that another seed would not repeat.")
ANALYSIS_MARKERS = ("<!-- analysis:start -->", "<!-- analysis:end -->")
CONCLUSION_MARKERS = ("<!-- conclusions:start -->", "<!-- conclusions:end -->")


# ---------------------------------------------------------------- plans of the analysis presets

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
SWEEP_PLANS = {"analysis": _PLAN, "analysis-full": replace(_PLAN, n_seeds=None)}
SWEEP_LABEL = {"l1": "L1 strength λ1", "l2": "L2 strength λ2", "latent": "VAE latent size",
               "beta": "VAE β (KL weight)", "channels": "AE bottleneck channels"}


def is_analysis(summary: dict) -> bool:
    """True for the grids of the analysis presets (their report goes to its own README block)."""
    return ((summary.get("grid") or {}).get("preset") or {}).get("name") in SWEEP_PLANS


# ---------------------------------------------------------------- 1. noise sweeps

def sweep_conditions(sigma: float = 0.1) -> list[Condition]:
    """Clean, the grid's sigma second, then the other levels.

    The grid's sigma sits at condition index 1, as in ``evaluate_run``, so its noisy images
    (generator seeded by (seed, index)) are the very ones of the grid's metrics.json. The
    order is the same for every model, so all models see the same noisy images.
    """
    conds: list[Condition] = [("clean", 0.0), ("gaussian", sigma)]
    conds += [("gaussian", s) for s in GAUSSIAN_SIGMAS if s not in (0.0, sigma)]
    return conds + [("s&p", p) for p in SP_FRACTIONS]


def _sweep_done(run_dir: Path, names: list[str]) -> bool:
    try:
        return read_json(run_dir / NOISE_JSON).get("conditions") == names and (run_dir / NOISE_NPZ).exists()
    except (FileNotFoundError, ValueError, AttributeError):
        return False


def sampled_z_generator(seed: int) -> torch.Generator:
    """CPU generator of the sampled-z eps (like the evaluation noise: the same draws on any device)."""
    return noise.eval_generator(seed, "sampled_z")


@torch.no_grad()
def sampled_z_metrics(model: torch.nn.Module, images_u8: np.ndarray, seed: int,
                      device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Per-image metrics of decode(mu + sigma * eps), eps from a fixed generator.

    This is what the original notebooks reported as the VAE's reconstruction quality.
    """
    model.eval()
    gen = sampled_z_generator(seed)
    data = torch.as_tensor(np.asarray(images_u8)).to(device)
    parts: dict[str, list[torch.Tensor]] = defaultdict(list)
    for start in range(0, data.shape[0], EVAL_BATCH):
        x = to_float(data[start:start + EVAL_BATCH])  # (B, 1, S, S)
        mu, logvar = model.encode(x)  # (B, L) each
        z = mu + torch.randn(mu.shape, generator=gen).to(mu.device) * torch.exp(0.5 * logvar)
        for k, v in M.all_metrics(model.decode(z), x).items():
            parts[k].append(v)
    return {k: torch.cat(v).cpu().numpy() for k, v in parts.items()}


def evaluate_noise(run_dir: str | Path, images: np.ndarray, conditions: list[Condition],
                   device: str | torch.device = "cpu", splits: tuple[str, ...] = ("test",)) -> dict[str, Any]:
    """One run under every condition on ``splits`` (the analysis uses test only: half the cost of
    val + test); writes noise_sweep.npz, then noise_sweep.json."""
    run_dir = Path(run_dir)
    model, cfg = load_run(run_dir, device)
    split = split_indices(len(images), cfg.data.split, cfg.data.split_seed)
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
    write_json(run_dir / NOISE_JSON, result)
    return result


def finished_runs(runs_dir: Path) -> list[Path]:
    """Run folders of ``runs_dir`` whose metrics.json is readable (sweeps/ has none: it is left out)."""
    return [d for d in sorted(runs_dir.iterdir()) if d.is_dir() and read_metrics(d) is not None]


def _grid_sigma(runs_dir: Path) -> float:
    try:
        return float(read_json(runs_dir / "grid.json")["preset"]["noise_sigma"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0.1


def noise_sweep(runs_dir: str | Path, device: str | torch.device = "cpu", log: Callable[[str], None] = print,
                sigma: float | None = None) -> list[str]:
    """Evaluate every finished run of ``runs_dir`` under ``sweep_conditions``; returns the runs done now."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir} is not a folder; run `python -m src reproduce --out {runs_dir}` first")
    dirs = finished_runs(runs_dir)
    if not dirs:
        raise UserError(f"{runs_dir} holds no finished runs; run `python -m src reproduce --out {runs_dir}` first")
    conds = sweep_conditions(_grid_sigma(runs_dir) if sigma is None else sigma)
    names = [noise.condition_name(k, v) for k, v in conds]
    todo = [d for d in dirs if not _sweep_done(d, names)]
    log(f"noise sweep ({', '.join(names)}): {len(dirs) - len(todo)} of {len(dirs)} runs already done; "
        f"{len(todo)} to do")
    images: dict[str, np.ndarray] = {}
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        # Evaluation ops are small (SSIM goes 4 images at a time): on a 2-core machine shared with
        # other jobs, 2 intra-op threads took 68 s per run where 1 took 3 s (measured, load ~7).
        torch.set_num_threads(1)
    try:
        for i, d in enumerate(todo, 1):
            cfg = RunConfig.from_dict(read_json(d / "config.json"))
            key = json.dumps(asdict(cfg.data), sort_keys=True)
            if key not in images:
                images[key] = load_dataset(cfg.data, progress=False, log=log).images
            log(f"[noise sweep {i}/{len(todo)}] {d.name}")
            evaluate_noise(d, images[key], conds, device)
    finally:
        torch.set_num_threads(threads)
    return [d.name for d in todo]


# ---------------------------------------------------------------- 2. parameter sweeps

def _comparable(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("device", "progress")}
    return json.dumps(d, sort_keys=True)


def sweep_points(plan: SweepPlan, preset: Preset, data_cfg: DataConfig, device: str = "auto",
                 progress: bool = True) -> list[dict[str, Any]]:
    """Every sweep point: {"sweep", "model", "value", "seed", "run" (path under OUT), "config"}.

    A point whose configuration equals a grid cell's points at that grid run instead of
    training a copy of it.
    """
    grid = grid_configs(preset, data_cfg, device, progress)
    by_cfg = {_comparable(c): name for name, c in grid.items()}
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
            run = by_cfg.get(_comparable(cfg)) or f"sweeps/{model}-{sweep}_{value:g}-s{seed}"
            points.append({"sweep": sweep, "model": model, "value": value, "seed": seed, "run": run, "config": cfg})
    return points


def run_sweeps(plan: SweepPlan, preset: Preset, out: Path, images: np.ndarray, data_cfg: DataConfig,
               device: torch.device, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate the unfinished sweep points into ``out/sweeps``; write ``sweeps.json``."""
    points = sweep_points(plan, preset, data_cfg, str(device), progress)
    missing = sorted({p["run"] for p in points if "/" not in p["run"] and read_metrics(out / p["run"]) is None})
    if missing:
        raise UserError(f"the sweeps reuse grid runs that are not finished in {out}: {missing[:3]}; "
                        f"run `python -m src reproduce --out {out}` first")
    configs = {p["run"].split("/", 1)[1]: p["config"] for p in points if p["run"].startswith("sweeps/")}
    run_configs(configs, out / "sweeps", images, [("clean", 0.0), ("gaussian", preset.noise_sigma)], device, log)
    index = {"plan": asdict(plan), "points": [{k: v for k, v in p.items() if k != "config"} for p in points]}
    write_json(out / "sweeps" / "sweeps.json", index)
    return index


def run_analysis(preset: Preset, out: str | Path, data_root: str | None = None, device: str = "auto",
                 progress: bool = True, log: Callable[[str], None] = print, plan: SweepPlan | None = None) -> None:
    """After ``run_grid``: the noise sweep of every grid run, then the parameter sweeps
    (``plan``, default: the preset's entry of ``SWEEP_PLANS``)."""
    from .train import pick_device

    out = Path(out)
    plan = plan or SWEEP_PLANS.get(preset.name)
    data_cfg = DataConfig(root=data_root, image_size=preset.image_size, limit=preset.limit,
                          sample_size=preset.sample_size)
    with grid_lock(out):
        faces = load_dataset(data_cfg, progress=progress, log=log)
        data_cfg = resolved(data_cfg, faces)  # as run_grid stores it, so grid runs match
        dev = pick_device(device)
        noise_sweep(out, dev, log, preset.noise_sigma)
        if plan is not None:
            run_sweeps(plan, preset, out, faces.images, data_cfg, dev, progress, log)


# ---------------------------------------------------------------- seeds and statistics

def mean_std(values: list[float] | np.ndarray) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 (0 for one value), n): the convention of report.aggregate."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 if all are zero)."""
    from scipy.stats import wilcoxon

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, made monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    adj, running = np.empty_like(p), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, (len(p) - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj.tolist()


class Store:
    """Per-image arrays of a results folder: RUN/per_image.npz, else RUN/noise_sweep.npz."""

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


def cell(runs: list[dict], model: str, reg: str, noise_train: float) -> dict[int, str]:
    """{seed: run name} of one grid cell."""
    return {r["seed"]: r["run"] for r in runs
            if r["model"] == model and r["reg"] == reg and r["noise_train"] == noise_train}


def paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict[str, Any]:
    """Paired comparison of two cells' per-image values ({seed: (N,) array}), a - b."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two cells share no seed")
    da = np.mean([a[s] for s in seeds], axis=0)
    db = np.mean([b[s] for s in seeds], axis=0)
    d = da - db
    per_seed = [float(np.mean(a[s] - b[s])) for s in seeds]
    diff = float(np.mean(d))
    ma, mb = mean_std([np.mean(a[s]) for s in seeds]), mean_std([np.mean(b[s]) for s in seeds])
    return {"seeds": seeds, "n_images": int(d.size), "mean_a": ma, "mean_b": mb,
            "diff": diff, "per_seed_diff": per_seed, "p": wilcoxon_p(d),
            "seeds_agree": bool(all(np.sign(x) == np.sign(diff) for x in per_seed)),
            "intervals_apart": bool(len(seeds) < 2 or abs(ma[0] - mb[0]) > ma[1] + mb[1])}


def decide(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm-correct one family in place and mark each comparison's significant direction."""
    for c, p in zip(comparisons, holm([c["p"] for c in comparisons])):
        c["p_holm"] = p
        c["significant"] = bool(p < ALPHA and c["seeds_agree"] and c["intervals_apart"] and c["diff"] != 0)
        c["direction"] = int(np.sign(c["diff"])) if c["significant"] else 0
    return comparisons


# ---------------------------------------------------------------- the four claims

def _values(store: Store, runs: dict[int, str], metric: str, cond: str, drop_from: str | None = None,
            split: str = "test") -> dict[int, np.ndarray]:
    """{seed: per-image metric}; with ``drop_from``, the change cond - drop_from (e.g. noisy - clean)."""
    out = {}
    for seed, run in runs.items():
        v = store.get(run, split, cond, metric).astype(float)
        out[seed] = v - store.get(run, split, drop_from, metric) if drop_from else v
    return out


def _compare(store, label_a, runs_a, label_b, runs_b, metric, cond, drop_from=None, **info) -> dict[str, Any]:
    c = paired(_values(store, runs_a, metric, cond, drop_from), _values(store, runs_b, metric, cond, drop_from))
    return {"a": label_a, "b": label_b, "metric": metric, "condition": cond,
            "quantity": f"{cond} - {drop_from}" if drop_from else cond,
            "runs_a": sorted(runs_a.values()), "runs_b": sorted(runs_b.values()), **info, **c}


def _pairs(comps: list[dict]) -> dict[str, int]:
    """Outcome of each pair (A vs one opponent B) over the metrics: +1 if A is significantly
    better on every metric, -1 if B is significantly better on at least one and A on none,
    0 otherwise (no significant difference, or the metrics disagree)."""
    by: dict[str, list[int]] = defaultdict(list)
    for c in comps:
        by[f"{c['a']} vs {c['b']}"].append(c["direction"])
    return {k: 1 if all(d > 0 for d in ds) else -1 if (min(ds) < 0 and max(ds) <= 0) else 0
            for k, ds in by.items()}


def _beats_all(comps: list[dict]) -> str:
    """Cell rule for "A beats every B": confirmed if A wins every pair, refuted if some B wins
    its pair, inconclusive otherwise."""
    out = list(_pairs(comps).values())
    if -1 in out:
        return REFUTED
    return CONFIRMED if out and all(o == 1 for o in out) else INCONCLUSIVE


def _beats_one(comps: list[dict]) -> str:
    """Cell rule for "some A beats B": confirmed if some A wins its pair, refuted if B wins
    every pair, inconclusive otherwise."""
    out = list(_pairs(comps).values())
    if 1 in out:
        return CONFIRMED
    return REFUTED if out and all(o == -1 for o in out) else INCONCLUSIVE


def _overall(cells: list[dict]) -> tuple[str, str]:
    """A claim holds where it is stated: confirmed if confirmed in every cell, refuted if
    refuted in at least one, inconclusive otherwise."""
    v = [c["verdict"] for c in cells]
    counts = ", ".join(f"{k} in {v.count(k)}" for k in (CONFIRMED, REFUTED, INCONCLUSIVE) if v.count(k))
    if not v:
        return INCONCLUSIVE, "no cell has the runs this claim needs"
    if all(x == CONFIRMED for x in v):
        return CONFIRMED, f"{counts} of {len(v)} cells"
    return (REFUTED if REFUTED in v else INCONCLUSIVE), f"{counts} of {len(v)} cells"


def claim_l2_clean(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"L2 is optimal for clean images".

    Per architecture, among clean-trained models on clean test inputs: L2 vs each of none,
    L1 and L1+L2, on PSNR and SSIM (6 tests per architecture). Confirmed for an architecture
    if L2 is significantly better than each of them on both metrics; refuted if some other
    regularizer is significantly better than L2 on a metric and not significantly worse on
    the other; inconclusive otherwise (no difference, or PSNR and SSIM disagree).
    """
    cells = []
    for model in ("ae", "vae"):
        l2 = cell(runs, model, "l2", 0.0)
        comps = [_compare(store, "L2", l2, R.REG_LABEL[o], cell(runs, model, o, 0.0), m, "clean", cell_label=model)
                 for o in ("none", "l1", "l1+l2") for m in METRICS if l2 and cell(runs, model, o, 0.0)]
        cells.append({"cell": R.MODEL_LABEL[model], "comparisons": comps})
    return _finish(cells, _beats_all)


def claim_l1_noise(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"L1 or L1+L2 help under noise".

    Per architecture and training condition (clean-trained, noise-trained), on test inputs
    with Gaussian noise at the grid's sigma: L1 vs none and L1+L2 vs none, on PSNR and SSIM.
    A regularizer "helps" if it is significantly better than none on both metrics. Confirmed
    for a cell if L1 or L1+L2 helps; refuted if each of them is significantly worse than none
    on some metric and better on none; inconclusive otherwise.
    """
    noisy = noise.condition_name("gaussian", sigma)
    cells = []
    for model in ("ae", "vae"):
        for tr in (0.0, sigma):
            base = cell(runs, model, "none", tr)
            comps = [_compare(store, R.REG_LABEL[r], cell(runs, model, r, tr), "Baseline", base, m, noisy, reg=r)
                     for r in ("l1", "l1+l2") for m in METRICS if base and cell(runs, model, r, tr)]
            cells.append({"cell": f"{R.MODEL_LABEL[model]}, {'clean' if tr == 0 else 'noise'}-trained",
                          "comparisons": comps})

    return _finish(cells, _beats_one)


def claim_ae_quality(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"AEs are better than VAEs for quality".

    Per regularizer, clean-trained models on clean test inputs: AE vs VAE on PSNR and SSIM.
    Confirmed for a regularizer if the AE is significantly better on both; refuted if the
    VAE is significantly better on one and not worse on the other; inconclusive otherwise
    (no difference, or PSNR and SSIM disagree).
    """
    cells = []
    for reg in KINDS:
        ae, vae = cell(runs, "ae", reg, 0.0), cell(runs, "vae", reg, 0.0)
        comps = [_compare(store, "AE", ae, "VAE", vae, m, "clean") for m in METRICS if ae and vae]
        cells.append({"cell": R.REG_LABEL[reg], "comparisons": comps})
    return _finish(cells, _beats_all)


def claim_vae_robust(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"The VAE is more robust to noise".

    Robustness = the per-image change of a metric from clean to noisy test inputs (Gaussian
    noise at the grid's sigma, same images), in absolute units (dB, SSIM). Per regularizer
    and training condition: VAE change vs AE change, on PSNR and SSIM. Confirmed for a cell
    if the VAE loses significantly less on both metrics; refuted if it loses significantly
    more on one and not less on the other; inconclusive otherwise. (A model that reconstructs
    less detail can lose less; this is about the drop, not the level.)
    """
    noisy = noise.condition_name("gaussian", sigma)
    cells = []
    for reg in KINDS:
        for tr in (0.0, sigma):
            ae, vae = cell(runs, "ae", reg, tr), cell(runs, "vae", reg, tr)
            comps = [_compare(store, "VAE", vae, "AE", ae, m, noisy, drop_from="clean") for m in METRICS if ae and vae]
            cells.append({"cell": f"{R.REG_LABEL[reg]}, {'clean' if tr == 0 else 'noise'}-trained",
                          "comparisons": comps})
    return _finish(cells, _beats_all)


def _finish(cells: list[dict], rule: Callable[[list[dict]], str]) -> dict[str, Any]:
    cells = [c for c in cells if c["comparisons"]]
    decide([x for c in cells for x in c["comparisons"]])  # one family per claim
    for c in cells:
        c["verdict"] = rule(c["comparisons"])
    verdict, tally = _overall(cells)
    return {"verdict": verdict, "tally": tally, "cells": cells}


CLAIMS = {
    "l2_clean": ("L2 is optimal for clean images", claim_l2_clean),
    "l1_noise": ("L1 or L1+L2 help under noise", claim_l1_noise),
    "ae_quality": ("AEs are better than VAEs for quality", claim_ae_quality),
    "vae_robust": ("The VAE is more robust to noise", claim_vae_robust),
}


def check_claims(runs_dir: str | Path, summary: dict | None = None, write: bool = True) -> dict[str, Any]:
    """Verdicts on the four claims from the stored per-image arrays; writes ``runs_dir/claims.json``."""
    runs_dir = Path(runs_dir)
    summary = summary or R.load_summary(runs_dir)
    sigma = ((summary.get("grid") or {}).get("preset") or {}).get("noise_sigma", 0.1)
    store = Store(runs_dir)
    out: dict[str, Any] = {"test": TEST_NAME, "alpha": ALPHA, "split": "test", "noise_sigma": sigma,
                           "seeds": sorted({r["seed"] for r in summary["runs"]}), "runs_dir": runs_dir.as_posix(),
                           "claims": {}}
    for key, (text, fn) in CLAIMS.items():
        out["claims"][key] = {"claim": text, "definition": " ".join((fn.__doc__ or "").split()), **fn(store, summary["runs"], sigma)}
    if write:
        write_json(runs_dir / "claims.json", out)
    return out


# ---------------------------------------------------------------- stored results as tables

def noise_runs(runs_dir: Path, summary: dict) -> list[dict]:
    """summary-like rows from each run's noise_sweep.json (runs without one are left out)."""
    rows = []
    for r in summary["runs"]:
        path = runs_dir / r["run"] / NOISE_JSON
        if path.exists():
            rows.append(read_json(path))
    return rows


def _levels(rows: list[dict], kind: str) -> list[tuple[float, str]]:
    """[(level, condition name)] of one noise kind, clean (level 0) first."""
    levels = {0.0: "clean"}
    for r in rows:
        for name, (k, v) in r.get("levels", {}).items():
            if k == kind:
                levels[float(v)] = name
    return sorted(levels.items())


def sweep_rows(runs_dir: Path) -> list[dict]:
    """Sweep points with their metrics.json and penalty share (penalty / reconstruction at the best epoch)."""
    path = runs_dir / "sweeps" / "sweeps.json"
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


# ---------------------------------------------------------------- figures

COLORS = {reg: f"C{i}" for i, reg in enumerate(KINDS)}


def _band(ax, x, stats, color, ls="-", label=None, marker="o"):
    mean = np.array([s[0] for s in stats])
    std = np.array([s[1] for s in stats])
    ax.plot(x, mean, ls, color=color, marker=marker, ms=3.5, label=label)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, lw=0)


def noise_figure(rows: list[dict], kind: str, sigma: float, path: Path, label: str) -> Path:
    """Each metric vs noise level: rows AE/VAE, columns MSE/PSNR/SSIM; per regularization,
    clean-trained (solid) vs noise-trained (dashed); bands = ±1 std over seeds."""
    levels = _levels(rows, kind)
    models = [m for m in ("ae", "vae") if any(r["model"] == m for r in rows)]
    fig = Figure(figsize=(13, 3.3 * len(models)))
    axes = fig.subplots(len(models), 3, squeeze=False)
    x = [lv for lv, _ in levels]
    for i, model in enumerate(models):
        for j, metric in enumerate(("mse", "psnr", "ssim")):
            ax = axes[i, j]
            aggs = [R.aggregate(rows, "test", c, metric) for _, c in levels]
            for reg in KINDS:
                for tr, ls in ((0.0, "-"), (sigma, "--")):
                    stats = [a.get((model, reg, tr)) for a in aggs]
                    if all(stats):
                        _band(ax, x, stats, COLORS[reg], ls,
                              f"{R.REG_LABEL[reg]} {'clean' if tr == 0 else 'noise'}-tr." if i == j == 0 else None)
            ax.set(title=f"{R.MODEL_LABEL[model]}: test {metric.upper()}",
                   xlabel="Gaussian σ" if kind == "gaussian" else "salt-and-pepper fraction p")
            ax.grid(alpha=0.3)
    if models:
        axes[0, 0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Noise sweep ({'Gaussian' if kind == 'gaussian' else 'salt and pepper'}); {label}", fontsize=9)
    fig.tight_layout()
    return R._save(fig, path)


def denoising_table(store: Store, runs: list[dict], rows: list[dict], sigma: float) -> dict[str, Any]:
    """Noise-trained minus clean-trained, per model x regularization x Gaussian level, PSNR and SSIM,
    one Holm family."""
    comps = []
    for model in ("ae", "vae"):
        for reg in KINDS:
            clean, noisy = cell(runs, model, reg, 0.0), cell(runs, model, reg, sigma)
            if not (clean and noisy):
                continue
            for level, cond in _levels(rows, "gaussian"):
                if all(store.has(r, "test", cond, "psnr") for r in (*clean.values(), *noisy.values())):
                    for m in METRICS:
                        comps.append(_compare(store, "noise-trained", noisy, "clean-trained", clean, m, cond,
                                              model=model, reg=reg, level=level))
    return {"comparisons": decide(comps)}


def denoising_figure(table: dict, path: Path, label: str, sigma: float) -> Path:
    comps = table["comparisons"]
    models = [m for m in ("ae", "vae") if any(c["model"] == m for c in comps)]
    fig = Figure(figsize=(10, 3.3 * max(1, len(models))))
    axes = fig.subplots(max(1, len(models)), 2, squeeze=False)
    for i, model in enumerate(models):
        for j, metric in enumerate(METRICS):
            ax = axes[i, j]
            for reg in KINDS:
                cs = sorted((c for c in comps if c["model"] == model and c["reg"] == reg and c["metric"] == metric),
                            key=lambda c: c["level"])
                if not cs:
                    continue
                x = [c["level"] for c in cs]
                _band(ax, x, [mean_std(c["per_seed_diff"])[:2] for c in cs], COLORS[reg], label=R.REG_LABEL[reg],
                      marker="")
                ax.scatter(x, [c["diff"] for c in cs], s=22, color=COLORS[reg],
                           facecolors=[COLORS[reg] if c["significant"] else "white" for c in cs], zorder=3)
            ax.axhline(0, color="k", lw=0.8)
            ax.set(title=f"{R.MODEL_LABEL[model]}: Δ test {metric.upper()}, σ={sigma:g}-trained − clean-trained",
                   xlabel="Gaussian σ of the test inputs")
            ax.grid(alpha=0.3)
            ax.title.set_fontsize(9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Denoising training: > 0 helps; filled = significant (Wilcoxon, Holm); {label}", fontsize=9)
    fig.tight_layout()
    return R._save(fig, path)


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
                stats = [mean_std([r["metrics"][split]["clean"][metric] for r in pts if r["value"] == v]) for v in values]
                _band(ax, values, stats, "C0" if split == "test" else "C1", ls, "test" if split == "test" else "validation")
            if reference and (model, metric) in reference:
                ax.axhline(reference[(model, metric)], color="gray", lw=0.8, ls=":", label="no regularization (test)")
            ax.set_xscale("log", base=10 if s in ("l1", "l2", "beta") else 2)
            ax.set(title=f"{R.MODEL_LABEL[model]}: {metric.upper()} vs {SWEEP_LABEL[s]}", xlabel=SWEEP_LABEL[s])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"Parameter sweep (clean-trained, clean inputs); {label}", fontsize=9)
    fig.tight_layout()
    return R._save(fig, path)


def _vae_run(runs_dir: Path, summary: dict) -> str | None:
    cells = R._runs_by_cell(summary)
    return cells.get(("vae", "none", 0.0)) or next((v for k, v in cells.items() if k[0] == "vae"), None)


@torch.no_grad()
def generator_figures(runs_dir: Path, summary: dict, figures: Path, x: torch.Tensor, label: str) -> list[Path]:
    """Prior samples, latent vs pixel interpolation between two test faces, and decode(mu) vs
    decode(sampled z) of the first test faces (captions: stored per-image PSNR / SSIM)."""
    run = _vae_run(runs_dir, summary)
    if run is None:
        return []
    model, cfg = load_run(runs_dir / run)
    title = f"VAE ({run})"
    written = []
    samples = model.sample(2 * R.N_SHOW, generator=torch.Generator().manual_seed(0))  # (12, 1, S, S)
    written.append(R._grid([("prior", samples[:R.N_SHOW], None), ("prior", samples[R.N_SHOW:], None)],
                           figures / "vae_prior_samples.png", f"{title}: decoded draws z ~ N(0, I)\n{label}"))
    mu = model.encode(x[:2])[0]  # (2, L)
    t = torch.linspace(0, 1, R.N_SHOW + 2)[:, None]  # (K, 1)
    z = (1 - t) * mu[0] + t * mu[1]  # (K, L)
    pixels = (1 - t[:, :, None, None]) * x[0] + t[:, :, None, None] * x[1]  # (K, 1, S, S)
    written.append(R._grid([("latent", model.decode(z), None),
                            ("pixels", pixels, [f"t={v:.2f}" for v in t[:, 0].tolist()])], figures / "vae_interpolation.png",
                           f"{title}: two test faces, interpolated in latent (μ) and pixel space\n{label}"))
    seed = cfg.train.seed
    gen = sampled_z_generator(seed)
    mu_b, logvar_b = model.encode(x)  # the whole first batch, as sampled_z_metrics drew it
    zs = mu_b + torch.randn(mu_b.shape, generator=gen) * torch.exp(0.5 * logvar_b)
    rows = [("original", x[:R.N_SHOW], None), ("decode(μ)", model.decode(mu_b[:R.N_SHOW]), R._captions(runs_dir / run, "clean"))]
    cap = None
    if (runs_dir / run / NOISE_NPZ).exists():
        per = np.load(runs_dir / run / NOISE_NPZ)
        if "test/sampled_z/psnr" in per.files:
            cap = [f"{p:.1f} dB / {s:.3f}" for p, s in zip(per["test/sampled_z/psnr"][:R.N_SHOW],
                                                         per["test/sampled_z/ssim"][:R.N_SHOW])]
    rows.append(("decode(z~q)", model.decode(zs[:R.N_SHOW]), cap))
    written.append(R._grid(rows, figures / "vae_mu_vs_sampled.png",
                           f"{title}: posterior mean vs a sampled z (the original evaluation)\n{label}"))
    return written


# ---------------------------------------------------------------- markdown

def _pm(metric: str, stats: tuple[float, float, int] | list | None) -> str:
    """mean ± std (the std only when there are 2+ values)."""
    if not stats:
        return "—"
    digits = {"mse": 5, "psnr": 2, "ssim": 4}[metric]
    return f"{stats[0]:.{digits}f} ± {stats[1]:.{digits}f}" if len(stats) < 3 or stats[2] > 1 else f"{stats[0]:.{digits}f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def noise_sweep_table(rows: list[dict], sigma: float, metric: str = "psnr") -> str:
    conds = [c for _, c in _levels(rows, "gaussian")] + [c for lv, c in _levels(rows, "s&p") if lv > 0]
    head = ["Model", "Regularization", "trained"] + [c.replace("gaussian_", "σ=").replace("s&p_", "s&p p=") for c in conds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    aggs = [R.aggregate(rows, "test", c, metric) for c in conds]
    for model in ("ae", "vae"):
        for reg in KINDS:
            for tr in (0.0, sigma):
                cells = [_pm(metric, a.get((model, reg, tr))) for a in aggs]
                if any(c != "—" for c in cells):
                    lines.append(f"| {R.MODEL_LABEL[model]} | {R.REG_LABEL[reg]} | {'clean' if tr == 0 else f'σ={sigma:g}'} | "
                                 + " | ".join(cells) + " |")
    return "\n".join(lines)


def denoising_markdown(table: dict) -> str:
    comps = [c for c in table["comparisons"] if c["metric"] == "psnr"]
    levels = sorted({c["level"] for c in comps})
    head = ["Model", "Regularization"] + [f"σ={lv:g}" for lv in levels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in ("ae", "vae"):
        for reg in KINDS:
            cs = {c["level"]: c for c in comps if c["model"] == model and c["reg"] == reg}
            if cs:
                cells = []
                for lv in levels:
                    c = cs.get(lv)
                    cells.append("—" if c is None else (f"**{c['diff']:+.2f}**" if c["significant"] else f"{c['diff']:+.2f}"))
                lines.append(f"| {R.MODEL_LABEL[model]} | {R.REG_LABEL[reg]} | " + " | ".join(cells) + " |")
    summary = []
    for model in ("ae", "vae"):
        for metric in METRICS:
            cs = [c for c in table["comparisons"] if c["model"] == model and c["metric"] == metric]
            if not cs:
                continue
            helps = sorted({c["level"] for c in cs if c["direction"] > 0})
            costs = sorted({c["level"] for c in cs if c["direction"] < 0})
            n = len({c["reg"] for c in cs})
            summary.append(f"- **{R.MODEL_LABEL[model]}, {metric.upper()}**: significant gains from denoising training at "
                           f"{_where(cs, helps, 1, n)}; significant losses at {_where(cs, costs, -1, n)} "
                           f"(in parentheses: how many of the {n} regularizers).")
    return "\n".join(lines) + "\n\n" + "\n".join(summary)


def _where(comps: list[dict], levels: list[float], direction: int, n: int) -> str:
    """"σ=0.2 (3/4), σ=0.3 (4/4)": levels with how many regularizers differ in ``direction``."""
    counts = [sum(1 for c in comps if c["level"] == lv and c["direction"] == direction) for lv in levels]
    return ", ".join(f"σ={lv:g} ({k}/{n})" for lv, k in zip(levels, counts)) or "none"


def sampled_z_table(store: Store, runs: list[dict], rows: list[dict]) -> str:
    """VAE test PSNR / SSIM decoded from mu vs from a sampled z (clean-trained, clean inputs)."""
    comps = []
    for reg in KINDS:
        c = {s: r for s, r in cell(runs, "vae", reg, 0.0).items() if store.has(r, "test", "sampled_z", "psnr")}
        if c:
            for m in METRICS:
                a = _values(store, c, m, "clean")
                b = _values(store, c, m, "sampled_z")
                comps.append({"reg": reg, "metric": m, **paired(a, b)})
    if not comps:
        return ""
    decide(comps)
    lines = ["| Regularization | PSNR from μ | PSNR from sampled z | SSIM from μ | SSIM from sampled z | p (Holm), PSNR / SSIM |",
             "|---|---|---|---|---|---|"]
    for reg in KINDS:
        cs = {c["metric"]: c for c in comps if c["reg"] == reg}
        if cs:
            p, s = cs["psnr"], cs["ssim"]
            lines.append(f"| {R.REG_LABEL[reg]} | {_pm('psnr', p['mean_a'])} | {_pm('psnr', p['mean_b'])} | "
                         f"{_pm('ssim', s['mean_a'])} | {_pm('ssim', s['mean_b'])} | {_p(p['p_holm'])} / {_p(s['p_holm'])} |")
    n = len({c["reg"] for c in comps})
    counts = {m: [sum(1 for c in comps if c["metric"] == m and c["direction"] == d) for d in (1, -1)] for m in METRICS}
    lines += ["", "Significantly better from μ than from a sampled z: " + ", ".join(
        f"{m.upper()} for {counts[m][0]} of {n} regularizers (worse for {counts[m][1]})" for m in METRICS) + "."]
    return "\n".join(lines)


def sweeps_markdown(rows: list[dict]) -> str:
    head = ["Sweep", "Model", "Value", "seeds", "PSNR val", "PSNR test", "SSIM test", "penalty / recon. loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(r["sweep"], r["model"], r["value"]) for r in rows},
                  key=lambda k: (list(SWEEP_LABEL).index(k[0]), k[1], k[2]))
    for s, model, v in keys:
        pts = [r for r in rows if (r["sweep"], r["model"], r["value"]) == (s, model, v)]
        cells = [_pm(m, mean_std([r["metrics"][split]["clean"][m] for r in pts]))
                 for split, m in (("val", "psnr"), ("test", "psnr"), ("test", "ssim"))]
        share = f"{np.mean([r['penalty_share'] for r in pts]):.2g}" if s in ("l1", "l2") else "—"
        lines.append(f"| {SWEEP_LABEL[s]} | {R.MODEL_LABEL[model]} | {v:g} | {len(pts)} | " + " | ".join(cells)
                     + f" | {share} |")
    return "\n".join(lines)


def _label(summary: dict) -> str:
    g = summary.get("grid") or {}
    p = g.get("preset") or {}
    data = "synthetic sample" if g.get("source") == "sample" else (g.get("dataset") or "unknown data")
    return f"{data}, preset {p.get('name')}, {p.get('epochs')} epochs, {len(p.get('seeds', [0]))} seed(s)"


def header(summary: dict, runs_dir: Path) -> list[str]:
    g = summary.get("grid") or {}
    p = g.get("preset") or {}
    sizes = g.get("split_sizes") or {}
    lines = [f"*Generated from `{runs_dir.as_posix()}` (the grid of `python -m src reproduce --preset {p.get('name')}`) "
             f"on {dt.date.today().isoformat()}. Dataset: **{g.get('dataset')}**, {g.get('n_images')} images "
             f"(train/val/test {sizes.get('train')}/{sizes.get('val')}/{sizes.get('test')}), "
             f"{p.get('image_size')}×{p.get('image_size')} px. Preset `{p.get('name')}`: {p.get('epochs')} epochs, "
             f"batch {p.get('batch_size')}, seeds {p.get('seeds')}. Device: {g.get('device')}, torch {g.get('torch')}.*", ""]
    if g.get("source") != "real":
        lines += ["> **These are not Flickr-Faces numbers.** They come from the procedural faces of `src/synthetic.py`.", ""]
    return lines


def analysis_markdown(runs_dir: Path, summary: dict, figures_rel: str, store: Store, rows: list[dict],
                      denoise: dict, sweeps: list[dict]) -> str:
    sigma = ((summary.get("grid") or {}).get("preset") or {}).get("noise_sigma", 0.1)
    n_seeds = len({r["seed"] for r in summary["runs"]})
    lines = header(summary, runs_dir)
    lines += [f"Tables: mean ± sample std (ddof = 1) over {n_seeds} seed(s); figures: bands of ±1 std over seeds. "
              f"A difference is called significant only by this test: {TEST_NAME}.", ""]
    lines += [ONE_SEED, ""] if n_seeds < 2 else []
    for model in ("ae", "vae"):
        lines += [f"#### {R.MODEL_LABEL[model]}: clean-trained, clean inputs", "", R.main_table(summary, model), ""]
    lines += [f"#### Noise robustness (test split, Gaussian σ = {sigma:g})", "", R.noise_table(summary, sigma), ""]
    if rows:
        lines += ["#### Noise sweeps (test PSNR, dB)", "",
                  "Every model is evaluated on the same noisy test images (noise drawn from a generator seeded by "
                  "the training seed and the condition).", "", noise_sweep_table(rows, sigma), "",
                  f"![noise sweep, Gaussian]({figures_rel}/noise_sweep_gaussian.png)", "",
                  f"![noise sweep, salt and pepper]({figures_rel}/noise_sweep_saltpepper.png)", ""]
    if denoise["comparisons"]:
        lines += [f"#### Denoising training (σ = {sigma:g}) vs clean training", "",
                  "Test PSNR difference, noise-trained − clean-trained, in dB; **bold** = significant.", "",
                  denoising_markdown(denoise), "", f"![denoising]({figures_rel}/denoising.png)", ""]
    if sweeps:
        lines += ["#### Parameter sweeps (clean-trained, clean inputs)", "",
                  "λ grids are per model: the AE's loss is a per-pixel mean, the VAE's is summed per image, so "
                  "the same λ weighs thousands of times less for the VAE. The last column is the penalty / "
                  "reconstruction-loss ratio at the best epoch, from the runs' history.csv.", "",
                  sweeps_markdown(sweeps), ""]
        lines += [f"![{n}]({figures_rel}/{n}.png)" for n in ("sweep_lambda", "sweep_vae_latent", "sweep_vae_beta",
                                                               "sweep_ae_channels")
                  if any(r["sweep"] in SWEEP_FILES[n] for r in sweeps)] + [""]
    zt = sampled_z_table(store, summary["runs"], rows)
    if zt:
        lines += ["#### The VAE as a generator", "",
                  "Test metrics of the clean-trained VAEs decoded from the posterior mean μ (this project) and from "
                  "one sampled z ~ q(z|x) (the original notebooks' evaluation).", "", zt, ""]
        lines += [f"![{n}]({figures_rel}/{n}.png)" for n in ("vae_prior_samples", "vae_interpolation", "vae_mu_vs_sampled")]
        lines += [""]
    return "\n".join(lines)


SWEEP_FILES = {"sweep_lambda": ("l1", "l2"), "sweep_vae_latent": ("latent",), "sweep_vae_beta": ("beta",),
               "sweep_ae_channels": ("channels",)}


def conclusions_markdown(claims: dict, label: str) -> str:
    """The README's conclusions, generated from ``claims.json``."""
    src = f"{claims['runs_dir']}/claims.json"
    lines = [f"*Generated from `{src}` ({label}). Test: {claims['test']}.*", ""]
    lines += [ONE_SEED, ""] if len(claims.get("seeds", [])) < 2 else []
    for key, c in claims["claims"].items():
        lines += [f"**\"{c['claim']}\": {c['verdict']}** ({c['tally']}). Backed by `{src}` → `claims.{key}`, "
                  f"computed from the runs' `per_image.npz`.", "",
                  "<details><summary>definition and numbers</summary>", "", c["definition"], ""]
        lines += ["| cell | comparison | quantity | metric | A (mean ± std over seeds) | B | Δ = A − B | p (Holm) | "
                  "significant | cell verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
        for cl in c["cells"]:
            for x in cl["comparisons"]:
                m = x["metric"]
                lines.append(f"| {cl['cell']} | {x['a']} vs {x['b']} | {x['quantity']} | {m.upper()} | "
                             f"{_pm(m, x['mean_a'])} | {_pm(m, x['mean_b'])} | {x['diff']:+.{2 if m == 'psnr' else 4}f} | "
                             f"{_p(x['p_holm'])} | {'yes' if x['significant'] else 'no'} | {cl['verdict']} |")
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def replace_block(readme: Path, markers: tuple[str, str], text: str, heading: str) -> None:
    """Replace the text between ``markers`` (appending a ``heading`` section with them if absent)."""
    start, end = markers
    doc = readme.read_text(encoding="utf-8") if readme.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in doc and end in doc:
        doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    write_text(readme, doc)


def analysis_report(runs_dir: str | Path, figures: str | Path, readme: str | Path | None = None,
                    summary: dict | None = None, grid_figures: bool = True) -> list[Path]:
    """Analysis figures in ``figures/<preset>/``, ``runs_dir/analysis.md``, ``runs_dir/claims.json``,
    and (for the analysis presets, given a README) its analysis and conclusions blocks.

    With ``grid_figures``, the grid's own figures (report.model_figures) go to the same folder.
    """
    runs_dir = Path(runs_dir)
    summary = summary or R.load_summary(runs_dir)
    if not summary["runs"]:
        raise UserError(f"{runs_dir}/summary.json lists no finished runs")
    name = ((summary.get("grid") or {}).get("preset") or {}).get("name") or runs_dir.name
    sub = Path(figures) / name
    sigma = ((summary.get("grid") or {}).get("preset") or {}).get("noise_sigma", 0.1)
    label = _label(summary)
    store = Store(runs_dir)
    written: list[Path] = []
    _, x = R._test_images(runs_dir, summary)
    if grid_figures:
        for model in sorted({r["model"] for r in summary["runs"]}, key=list(R.MODEL_LABEL).index):
            written += R.model_figures(runs_dir, sub, model, summary, x)
    rows = noise_runs(runs_dir, summary)
    if rows:
        written.append(noise_figure(rows, "gaussian", sigma, sub / "noise_sweep_gaussian.png", label))
        written.append(noise_figure(rows, "s&p", sigma, sub / "noise_sweep_saltpepper.png", label))
    denoise = denoising_table(store, summary["runs"], rows, sigma) if rows else {"comparisons": []}
    if denoise["comparisons"]:
        written.append(denoising_figure(denoise, sub / "denoising.png", label, sigma))
    sweeps = sweep_rows(runs_dir)
    ref = {(m, k): v[0] for m in ("ae", "vae") for k in METRICS
           for key, v in R.aggregate(summary["runs"], "test", "clean", k).items() if key == (m, "none", 0.0)}
    for fname, names in SWEEP_FILES.items():
        if any(r["sweep"] in names for r in sweeps):
            written.append(sweep_figure(sweeps, list(names), sub / f"{fname}.png", label,
                                        ref if fname == "sweep_lambda" else None))
    written += generator_figures(runs_dir, summary, sub, x, label)
    claims = check_claims(runs_dir, summary)
    rel = os.path.relpath(sub, Path(readme).parent if readme else runs_dir).replace(os.sep, "/")
    section = analysis_markdown(runs_dir, summary, rel, store, rows, denoise, sweeps)
    conclusions = conclusions_markdown(claims, label)
    written.append(write_text(runs_dir / "analysis.md", section + "\n\n## Conclusions\n\n" + conclusions + "\n"))
    written.append(runs_dir / "claims.json")
    if readme and is_analysis(summary):
        replace_block(Path(readme), ANALYSIS_MARKERS, section, "## Parameter analysis")
        replace_block(Path(readme), CONCLUSION_MARKERS, conclusions, "## Conclusions")
    return written
