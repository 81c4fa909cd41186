"""The experiment grid (of a preset, ``config.PRESETS``); ``run_grid`` trains and evaluates what is not done yet.

The grid is {AE, VAE} x {none, L1, L2, L1+L2} x {clean-trained, noise-trained (sigma 0.1)}
x seeds. A run is finished when its ``metrics.json`` is readable; finished runs are never
redone, interrupted ones resume from their last checkpoint.

Layout of an output folder (``runs/<preset>`` by default)::

    grid.json            resolved preset, dataset, device, date
    <model>-<reg>-<clean|noise0.1>-s<seed>/   one run folder (see ``runs``)
    baselines.json       mean-image and PCA rows on the same test images
    summary.json, summary.csv
    .lock, .lock.writers, <run>/.lock   file locks (``distributed``): who writes, who trains a run

Under ``torchrun`` the ranks share the unfinished runs (see ``run_configs``); the folder must
be the same path on every node.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import itertools
import os
import platform
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .checkpoint import CorruptFile
from .budget import piece_plan, plan_line, trainer_line
from .pca import baseline_metrics
from .config import KINDS, MODEL_NAMES, PRESETS, DataConfig, ModelConfig, Preset, RegConfig, RunConfig, config_key
from .data import SAMPLE_MARKER, FaceSet, load_dataset, resolved, split_indices
from .distributed import RunLock, grid_lock
from .eta import After, Calibration, after_seconds, clock, epochs_left, log_event, run_cost, run_seconds
from .evaluation import add_diagnostics, drop_last, evaluate_run, needs_diagnostics, summarize
from .results import BASELINES, SWEEPS_JSON, read_config, read_metrics, run_data, run_flags
from .runs import TrainingDiverged, is_trained, run_name
from .stacked import StackUnavailable, default_parallel_runs, fit_stacked, stack_chunks
from .train import fit, pick_device
from .utils import UserError, read_json, save_npz, write_json, write_text


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


def check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is an existing file, not a folder")
    probe = out if out.exists() else next(p for p in out.parents if p.exists())
    if not os.access(probe, os.W_OK):
        raise UserError(f"--out {out} is not writable")


def grid_id(preset: Preset, data_cfg: DataConfig) -> str:
    """What launches must agree on to share an output folder: the preset (but whether last.pt is kept)
    and the resolved data."""
    preset = replace(preset, train=replace(preset.train, keep_last=False))
    body = config_key({"preset": asdict(preset), "data": asdict(data_cfg)})
    return f"{preset.name}-{hashlib.sha256(body.encode()).hexdigest()[:10]}"


def run_grid(preset: Preset, out: str | Path, data_root: str | None = None, device: str = "auto",
             models: tuple[str, ...] = MODEL_NAMES, progress: bool = True, log=print,
             parallel_runs: int | None = None, budget=None, on_done=None, only=None,
             after: After | None = None) -> dict[str, Any]:
    """Train and evaluate every unfinished run of the grid, then write the summary.

    ``after``: what follows in the study (the rate-distortion sweep, the report), counted in the ETA.

    ``parallel_runs``: runs of one model trained together (see ``run_configs``). Under torchrun
    every rank calls this: the ranks share the runs, rank 0 alone writes grid.json, baselines and
    the summary, and every rank returns the summary after a last barrier. Separate launches of
    the same grid on the same ``out`` share it too; one of another grid gets a one-line error.
    ``budget``, ``on_done``: as in ``run_configs`` (a piece: ``budget.Budget``, the bundle writer);
    ``only``: a predicate on run names restricting the grid (``reproduce --runs``).
    Returns the summary dict (also in ``out/summary.json``).
    """
    out = Path(out)
    check_output_dir(out)
    pick_device(device)  # a device this machine lacks is refused before any data is read
    distributed.setup(device)
    main = distributed.is_main()
    say = log if main else _quiet  # what every rank would repeat is said once
    data_cfg = replace(preset.data, root=data_root)
    # before the lock: a bad --data writes nothing; rank 0 first, so the others read its decoded cache
    faces = distributed.main_first(lambda: load_dataset(data_cfg, progress=progress and main, log=say))
    data_cfg = resolved(data_cfg, faces)  # the absolute folder + its file-list digest, with every run
    with grid_lock(out, grid_id(preset, data_cfg)):
        dev = pick_device(device)
        if main:
            log_event(out, "start", what=f"grid {preset.name}")  # progress.log: what the ETA's error is measured on
            info = grid_info(preset, faces, data_cfg, dev)
            log(f"preset {preset.name}: " + ", ".join(f"{k}={v}" for k, v in preset.summary().items()
                                                       if k not in ("name", "description")))
            log(f"dataset: {info['dataset']} ({info['n_images']} images: {info['split_sizes']}); "
                f"device: {info['device']}" + (f" x {distributed.world_size()} ranks" if distributed.tag() else ""))
            old = _read_json_or_none(out / "grid.json")
            write_json(out / "grid.json", {**info, "started": (old or info)["started"]})
        # per-run tqdm bars of several ranks would overwrite each other: the grid's progress lines stay
        configs = grid_configs(preset, data_cfg, device, progress and not distributed.tag(), models)
        configs = {n: c for n, c in configs.items() if only is None or only(n)}
        if main and (not (out / BASELINES).exists()
                     or not all((out / n / "metrics.json").exists() for n in configs)):
            write_baselines(out, faces, data_cfg)  # first: each run's metrics.json flags a run at the mean image
        distributed.barrier()
        todo = run_configs(configs, out, faces.images, _conditions(preset), dev, log, parallel_runs, budget, on_done,
                           after)
        if main:
            for n in configs:  # a run stopped between its metrics.json and removing its last.pt
                if (out / n / "last.pt").exists() and read_metrics(out / n) is not None:
                    drop_last(out / n, RunConfig.from_dict(read_config(out / n)))
            summary = write_summary(out)
        distributed.barrier()
    return summary if main else read_json(out / "summary.json")


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Unit:
    """Work handed to one rank: runs trained together (a stack, or one run), then evaluated."""
    names: tuple[str, ...]
    train: bool    # False: trained already, evaluated only
    cost: float    # estimated images x pixels processed x MODEL_COST (``eta.run_cost``)
    images: float = 0.0  # image-steps left: training epochs x images, then one pass of val + test (budget)


def run_images(cfg: RunConfig, n_images: int, epochs_left: int) -> float:
    """Image-steps a run still takes: ``epochs_left`` passes over train, then one over val + test."""
    train, val, test = cfg.data.split
    return (epochs_left * train + val + test) * n_images


def plan_units(configs: dict[str, RunConfig], out: Path | None, n_images: int, parallel_runs: int,
               world: int = 1) -> list[Unit]:
    """The unfinished work of ``configs`` in ``out`` (None: none of it done) as units for ``shard``.

    ``parallel_runs`` as in ``run_configs`` (not None); with 0 ("all of a model's runs together")
    and several ranks, each model's runs form up to ``world`` stacks, so that every rank gets work.
    """
    todo = [n for n in configs if out is None or read_metrics(out / n) is None]
    untrained = {n: configs[n] for n in todo if out is None or not is_trained(out / n, configs[n].train.epochs)}
    chunks = [[n] for n in untrained] if parallel_runs == 1 else stack_chunks(untrained, parallel_runs)
    if parallel_runs == 0 and world > 1:
        chunks = [c[i:i + k] for c in chunks for k in [-(-len(c) // world)] for i in range(0, len(c), k)]

    def left(n: str) -> int:
        return epochs_left(out / n, configs[n]) if out is not None else configs[n].train.epochs

    units = [Unit(tuple(c), True, sum(run_cost(configs[n], n_images, left(n)) for n in c),
                  sum(run_images(configs[n], n_images, left(n)) for n in c)) for c in chunks]
    return units + [Unit((n,), False, run_cost(configs[n], n_images, 0), run_images(configs[n], n_images, 0))
                    for n in todo if n not in untrained]


def run_configs(configs: dict[str, RunConfig], out: Path, images: np.ndarray, conditions: list[tuple[str, float]],
                device: torch.device | str, log=print, parallel_runs: int | None = None, budget=None,
                on_done=None, after: After | None = None) -> list[str]:
    """Train (resuming) and evaluate every config whose ``out/<name>/metrics.json`` is not readable.

    ``parallel_runs``: how many runs of one model (``stacked.stack_key``) train together as one
    stacked model; 1 = one at a time with ``fit``, 0 = all, None = ``default_parallel_runs``.
    Under torchrun every rank calls this with the same ``configs``: rank 0's plan (``plan_units``)
    is split among the ranks by cost (``distributed.shard``). Each run is trained under its
    folder's lock: a run another process holds is skipped, then waited for at the end and taken
    over if that process died. A run that diverges is reported and the others go on; the error
    is raised at the end, on every rank. ``budget`` (a ``budget.Budget``): its plan is printed before
    any training and it may refuse units that cannot finish in time (they stay undone);
    ``on_done(name)`` is called once a run is evaluated (a piece's bundle writer); ``after``: what
    follows in the study, for the ETA. Returns the
    names that were unfinished (done now by some rank or process); finished runs are never redone.
    """
    dev = pick_device(device) if isinstance(device, str) else device
    n_parallel = default_parallel_runs(dev) if parallel_runs is None else parallel_runs
    world, tag = distributed.world_size(), distributed.tag()
    units = distributed.broadcast(plan_units(configs, out, len(images), n_parallel, world)
                                  if distributed.is_main() else None)
    todo = [n for u in units for n in u.names]
    (log if distributed.is_main() else _quiet)(
        f"{len(configs) - len(todo)} of {len(configs)} runs already finished; {len(todo)} to do"
        + (f", shared by {world} ranks" if world > 1 else ""))
    mine = [units[i] for i in sorted(distributed.shard([u.cost for u in units], world)[distributed.rank()])]
    if budget is not None and todo:
        plan = piece_plan([configs[n] for u in mine if u.train for n in u.names], len(images))
        log(tag + plan_line(plan, budget.rate, budget.seconds))
    grid = GridProgress(out, configs, units, after, distributed.is_main())
    failed: dict[str, str] = {}
    baselines = _read_json_or_none(out / BASELINES)  # each metrics.json flags a run at the mean image
    count = itertools.count(1)
    n_mine = sum(len(u.names) for u in mine)

    def work(names: tuple[str, ...], train: bool | None, wait: bool = False) -> list[str]:
        """Train (None: if needed) and evaluate ``names`` under their locks; returns those held by others."""
        with ExitStack() as stack:
            locks = {n: stack.enter_context(RunLock(out / n)) for n in names}
            busy = [n for n in names if not locks[n].acquire(wait)]
            held = [n for n in names if n not in busy and read_metrics(out / n) is None]  # or done meanwhile
            for i, n in enumerate(held):
                locks[n].sign()
                log(f"{tag}[{next(count)}/{n_mine}] {n}" + (f" ({grid.line(n)})" if i == 0 else ""))
            if train is None:  # taken over from a process that stopped: whatever it left undone
                train = any(not is_trained(out / n, configs[n].train.epochs) for n in held)
            alone = n_parallel == 1
            if held and train and not alone:
                try:
                    results = fit_stacked([configs[n] for n in held], images, [out / n for n in held], resume=True,
                                          log=log)
                    failed.update({n: str(r["error"]) for n, r in zip(held, results) if r["error"] is not None})
                except StackUnavailable as e:  # the last fallback: the plain step of one run
                    log(f"{tag}trainer: the stacked step failed to start ({e}); "
                        f"training {len(held)} runs one at a time")
                    alone = True
            for n in held:
                if train and alone:
                    try:
                        result = fit(configs[n], images, out / n, resume=True, log=log,
                                     final_checkpoint=configs[n].train.keep_last)  # else dropped once evaluated
                        log(tag + trainer_line(configs[n], len(images), result["history"]))
                    except TrainingDiverged as e:
                        failed[n] = str(e)
                        log(f"{n}: {e}; the other runs go on")
                if n not in failed:
                    try:
                        evaluate_run(out / n, images, conditions, device=dev, baselines=baselines)
                    except CorruptFile as e:  # is_trained reads no checkpoint: a damaged best.pt shows here
                        warnings.warn(f"{e}; training {n} again", stacklevel=2)
                        fit(configs[n], images, out / n, resume=True, log=log,
                            final_checkpoint=configs[n].train.keep_last)
                        evaluate_run(out / n, images, conditions, device=dev, baselines=baselines)
                    if on_done is not None:
                        on_done(n)
            return [n for n in busy if read_metrics(out / n) is None]

    def admitted(u: Unit) -> bool:
        why = None if budget is None else budget.admit(u.images, f"{len(u.names)} run(s) ({', '.join(u.names)})")
        if why:
            log(tag + why)
        return why is None

    busy = [n for u in mine if admitted(u) for n in work(u.names, u.train)]
    for n in busy:  # held by another launch: wait, then finish it if that process did not
        log(f"{tag}{n}: another process holds it ({RunLock(out / n).holder()}); waiting for it")
        work((n,), None, wait=True)
    if budget is not None:
        budget.done()
    log(f"{tag}done {n_mine} runs in {clock(time.perf_counter() - grid.t0)} ({grid.line('grid done')})")
    failed = {k: v for part in distributed.all_gather(failed) for k, v in part.items()}  # waits for every rank
    if failed:
        raise TrainingDiverged("; ".join(f"{name}: {e}" for name, e in failed.items()))
    return todo


class GridProgress:
    """"k/n runs done, elapsed, ETA" over the whole grid (every process's runs, read from the run folders);
    the ETA also counts what follows (``after``: the sweeps or the rate-distortion step, the report). Each
    line is also appended to ``OUT/progress.log`` (``eta``; ``after.log_dir`` instead when given).

    The ETA: each unit left costs its slowest run's epochs left (a stack trains its runs together) plus
    each run's evaluation, at the rates ``eta.Calibration`` measures on the grid's run folders (and on
    ``after.timed``), then what ``after`` says follows.
    """

    def __init__(self, out: Path, configs: dict[str, RunConfig], units: list[Unit], after: After | None = None,
                 write: bool = True) -> None:
        self.out, self.configs, self.units, self.after, self.write = out, configs, units, after, write
        self.t0 = time.perf_counter()

    def seconds_left(self) -> float | None:
        runs = [(self.out / n, c) for n, c in self.configs.items()]
        cal = Calibration.from_runs(runs + list(self.after.timed if self.after else ()))
        total = after_seconds(cal, self.after, runs, self.out)
        for u in self.units:
            left = [n for n in u.names if not (self.out / n / "metrics.json").exists()]
            train = [run_seconds(cal, self.configs[n], epochs_left(self.out / n, self.configs[n]), False)
                     for n in left] if u.train else [0.0]
            other = [run_seconds(cal, self.configs[n], 0) for n in left]
            if left and None in train + other or total is None:
                return None
            total += max(train, default=0.0) + sum(other)
        return total

    def line(self, what: str) -> str:
        """The progress text; appended with the ETA in seconds to ``OUT/progress.log``."""
        done = sum((self.out / n / "metrics.json").exists() for n in self.configs)
        left = self.seconds_left()
        if self.write:
            log_event(self.after.log_dir if self.after and self.after.log_dir else self.out, "progress", left, what)
        return (f"grid: {done}/{len(self.configs)} runs done, {clock(time.perf_counter() - self.t0)} elapsed, "
                f"ETA {'?' if left is None else clock(left)}")


def train_latent_variant(base: RunConfig, latent: int, images: np.ndarray, out: Path, log=print) -> Path:
    """Train (or resume, or reuse) ``base`` with another latent size in ``out``: AE bottleneck
    channels or VAE latent dimensions (``rd`` draws their rate-distortion curves). Once trained, its
    last.pt goes (only ``best.pt`` is read) unless ``base.train.keep_last``."""
    key = "ae_latent" if base.model.name == "ae" else "vae_latent"
    cfg = replace(base, model=replace(base.model, **{key: latent}))
    if not is_trained(out, cfg.train.epochs):
        log(f"rd: training {base.model.name} with latent {latent} ({cfg.train.epochs} epochs) in {out}")
        fit(cfg, images, out, resume=True, log=log, final_checkpoint=cfg.train.keep_last)
    if not cfg.train.keep_last:
        (out / "last.pt").unlink(missing_ok=True)  # one trained before final_checkpoint existed
    return out


def _conditions(preset: Preset) -> list[tuple[str, float]]:
    return [("clean", 0.0), ("gaussian", preset.noise_sigma)]


def grid_info(preset: Preset, faces: FaceSet, data_cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    sizes = {k: len(v) for k, v in split_indices(len(faces.images), data_cfg.split, data_cfg.split_seed).items()}
    dataset = {"real": "Flickr-Faces 70k thumbnails (real)", "sample": "synthetic sample (src.synthetic)"}
    return {"preset": preset.summary(), "dataset": dataset.get(faces.source, f"image folder {faces.root}"),
            "source": faces.source, "data_root": faces.root, "n_images": len(faces.images),
            "data_fingerprint": faces.fingerprint(), "generator": sample_params(faces.root),
            "protocol_seeds": list(PRESETS[preset.name].seeds if preset.name in PRESETS else preset.seeds),
            "training": training_setting(preset),
            "split_sizes": sizes, "device": device_description(device), "torch": torch.__version__,
            "started": dt.datetime.now().isoformat(timespec="seconds")}


def training_setting(preset: Preset) -> dict[str, Any]:
    """What every run of a grid shares (the preset's TrainConfig without per-run and speed fields): bundles
    that differ here are not one study (``merge`` compares it)."""
    skip = {"noise_train", "seed", "device", "progress", "checkpoint_s", "compile", "channels_last", "fused_adam",
            "keep_last"}  # how a run is made and kept, not what it learns
    return {k: v for k, v in asdict(preset.train).items() if k not in skip}


def sample_params(root: str) -> dict[str, Any] | None:
    """The generator's parameters (name, version, n, seed, size) of a generated sample; None for other folders."""
    return _read_json_or_none(Path(root) / SAMPLE_MARKER)


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
    write_json(out / BASELINES, result)
    return result


def _read_json_or_none(path: Path) -> Any:
    try:
        return read_json(path)
    except (ValueError, FileNotFoundError):
        return None


SUMMARY_KEYS = ("run", "model", "reg", "noise_train", "seed", "best_epoch")
DIAGNOSTIC_KEYS = ("rate_bits_per_image", "active_units", "active_entries")  # summary.csv columns (VAE, VAE, AE)


def write_summary(out: Path) -> dict[str, Any]:
    """Collect every finished run's metrics.json into summary.json and summary.csv."""
    runs, baselines = [], _read_json_or_none(out / BASELINES)
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        m = read_metrics(d)
        if m is not None:  # the flags again: the baselines may be newer than the run
            runs.append({**{k: v for k, v in m.items() if k != "per_image"}, "flags": run_flags(m, baselines)})
    summary = {"grid": _read_json_or_none(out / "grid.json"), "runs": runs, "baselines": baselines}
    write_json(out / "summary.json", summary)
    rows = []
    for r in runs:
        row = {k: r[k] for k in SUMMARY_KEYS}
        for split in ("val", "test"):
            for cond, vals in r[split].items():
                row.update({f"{split}_{cond}_{k}": v for k, v in vals.items() if k != "n"})
        d = r.get("diagnostics") or {}  # the same columns for every run: empty where a model has none
        row.update({k: d.get(k) for k in DIAGNOSTIC_KEYS}, pca_equivalent_k=(d.get("pca_equivalent") or {}).get("k"))
        rows.append(row)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(out / "summary.csv", buf.getvalue())
    return summary


def ensure_diagnostics(out: str | Path, log=print, device: str | torch.device = "cpu") -> list[str]:
    """Give the finished runs of a grid (and of its sweeps) that predate the diagnostics theirs, from
    ``best.pt``, once; then refresh the summary. Runs without weights (a weight-free bundle) or data
    are named in one line and left as they are. Returns the runs given diagnostics now."""
    out = Path(out)
    names = [d.name for d in sorted(out.iterdir()) if d.is_dir()]
    if (out / SWEEPS_JSON).exists():
        names += sorted({p["run"] for p in read_json(out / SWEEPS_JSON)["points"] if p["run"].startswith("sweeps/")})
    todo = [n for n in names if needs_diagnostics(read_metrics(out / n))]
    done, missing, datasets = [], [], {}
    for n in todo:
        try:
            if not (out / n / "best.pt").exists():
                raise UserError("no best.pt")
            add_diagnostics(out / n, run_data(out / n, datasets)["all"], device)
            done.append(n)
        except UserError:
            missing.append(n)
    if missing:
        log(f"diagnostics: {len(missing)} runs evaluated before the VAE diagnostics existed have no weights or data "
            f"to compute them from (e.g. {missing[0]}); their diagnostics are left out")
    if any("/" not in n for n in done):
        write_summary(out)
    return done
