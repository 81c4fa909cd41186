"""Run folders: names, files, "is it trained", starting and resuming a run, and its bookkeeping
between epochs (``RunState``); ``train.fit`` and ``stacked.fit_stacked`` both build on it.

A run folder holds (all written atomically: temp file, then rename)::

    config.json     the whole RunConfig (model, reg, train, data)
    split.npz       the train/val/test indices used
    history.csv     one row per finished epoch
    last.pt         checkpoint {"model", "optimizer", "config", "epoch", "best_val",
                    "best_epoch", "rng", "history"}, rewritten at most every
                    ``checkpoint_s`` seconds and after the last epoch
    best.pt         the weights of the epoch with the lowest validation loss (a copy)
    per_image.npz   per-image metrics, written by ``evaluation.evaluate_run``
    metrics.json    split x condition means; written last, it marks a finished run
"""
from __future__ import annotations

import csv
import io
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .checkpoint import load_torch, rng_state, save_torch, set_rng_state
from .config import RESUMABLE, RunConfig, TrainConfig, config_key
from .data import split_indices
from .results import read_history, read_metrics
from .utils import UserError, save_npz, write_json, write_text


def run_name(model: str, reg: str, noise_train: float, seed: int) -> str:
    """The folder name of a grid run (``train``'s default ``--out`` too): ``ae-l1-noise0.1-s0``."""
    return f"{model}-{reg}-{'clean' if noise_train == 0 else f'noise{noise_train:g}'}-s{seed}"


class TrainingDiverged(UserError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


@dataclass
class RunState:
    """One run's bookkeeping between epochs: history, best copy, what is on disk (fit and stacked)."""
    cfg: RunConfig
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 1
    best_val: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_unsaved: bool = False
    saved_epoch: int = 0  # epoch of the last.pt on disk (0: none)

    def end_epoch(self, epoch: int, tr: dict[str, float], va: dict[str, float], seconds: float,
                  state: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Record a finished epoch; ``state()`` gives a private copy of the weights, taken only on improvement.

        Raises TrainingDiverged (recording nothing) if a loss is NaN or inf.
        """
        if not all(math.isfinite(v) for v in (*tr.values(), *va.values())):
            good = (f"; the last good checkpoint is {self.run_dir / 'last.pt'} (epoch {self.saved_epoch})"
                    if self.saved_epoch else "")
            raise TrainingDiverged(f"training diverged at epoch {epoch} (train loss {tr['loss']}, "
                                   f"val loss {va['loss']}): lower the learning rate{good}")
        self.history.append({"epoch": epoch, **{f"train_{k}": v for k, v in tr.items()},
                             **{f"val_{k}": v for k, v in va.items()}, "seconds": seconds})
        if va["loss"] < self.best_val:  # update "best" only on improvement, and keep a real copy
            self.best_val, self.best_epoch, self.best_state, self.best_unsaved = va["loss"], epoch, state(), True

    def save(self, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any], epoch: int,
             last: bool = True) -> None:
        """Write best.pt (if it changed), then last.pt (unless ``last`` is False): a checkpoint never names a
        best that is not on disk."""
        if self.best_unsaved:
            save_torch({"model": self.best_state, "config": self.cfg.to_dict(), "epoch": self.best_epoch,
                        "val_loss": self.best_val}, self.run_dir / "best.pt")
            self.best_unsaved = False
        if last:
            save_torch({"model": model_state, "optimizer": optimizer_state, "config": self.cfg.to_dict(),
                        "epoch": epoch, "best_val": self.best_val, "best_epoch": self.best_epoch,
                        "rng": rng_state(), "history": self.history}, self.run_dir / "last.pt")
            self.saved_epoch = epoch

    def write_history(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.history[0]) if self.history else ["epoch"])
        writer.writeheader()
        writer.writerows(self.history)
        write_text(self.run_dir / "history.csv", buf.getvalue())

    def result(self, model: torch.nn.Module) -> dict[str, Any]:
        return {"history": self.history, "best_epoch": self.best_epoch, "best_val": self.best_val,
                "best_state": self.best_state, "model": model}


def start_run(cfg: RunConfig, run_dir: str | Path, model: torch.nn.Module, resume: bool,
              log=print) -> tuple[RunState, dict[str, Any] | None]:
    """A fresh ``RunState``, or the one of ``run_dir/last.pt`` (loaded into ``model``) when resuming.

    Returns the state and the checkpoint's optimizer state (None when starting fresh). Without
    ``resume`` an existing checkpoint is an error, so finished work is never silently overwritten.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is an existing file, not a folder")
    run = RunState(cfg, run_dir)
    if not (run_dir / "last.pt").exists():
        with warnings.catch_warnings():  # a damaged metrics.json: the run is redone, as run_configs says
            warnings.simplefilter("ignore")
            finished = read_metrics(run_dir) is not None
        if finished and (run_dir / "best.pt").exists():
            raise UserError(f"{run_dir} holds a finished, evaluated run whose last.pt was removed (it is kept "
                            "with --keep-last); train it again with another --out")
        return run, None
    if not resume:
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    try:
        ckpt = load_torch(run_dir / "last.pt")
        best_ckpt = load_torch(run_dir / "best.pt")  # written before last.pt: without it "best" is lost
    except ValueError as e:
        warnings.warn(f"{e}; starting this run again from epoch 1", stacklevel=3)
        return run, None
    stored = RunConfig.from_dict(ckpt["config"])  # fills settings added after the checkpoint was written
    if config_key(stored, RESUMABLE) != config_key(cfg, RESUMABLE):
        raise UserError(f"{run_dir} was trained with a different configuration; use another --out")
    model.load_state_dict(ckpt["model"])
    set_rng_state(ckpt["rng"])  # training draws from per-run generators; kept so the format stays the same
    run.history, run.best_val, run.best_epoch = ckpt["history"], ckpt["best_val"], ckpt["best_epoch"]
    run.saved_epoch = ckpt["epoch"]
    run.start_epoch, run.best_state = ckpt["epoch"] + 1, best_ckpt["model"]
    log(f"resuming {run_dir} after epoch {ckpt['epoch']}")
    return run, ckpt["optimizer"]


def resident_split(images: np.ndarray, runs: list[RunState], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Write each run's config.json and split.npz; return its (train, val) images on ``device`` as uint8.

    The runs share one data configuration, so one copy of the split serves them all.
    """
    data = runs[0].cfg.data
    split = split_indices(len(images), data.split, data.split_seed)
    for run in runs:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run.run_dir / "config.json", run.cfg.to_dict())
        save_npz(run.run_dir / "split.npz", split)
    train_u8 = torch.from_numpy(np.ascontiguousarray(images[split["train"]])).to(device)  # (Ntr, S, S) uint8
    return train_u8, torch.from_numpy(np.ascontiguousarray(images[split["val"]])).to(device)


SAVE_SHARE = 0.05  # checkpoint writes may take at most this share of the training time


class CheckpointClock:
    """When to write last.pt / best.pt. A VAE checkpoint (weights + Adam moments) is ~200 MB, a stack of 48
    of them several GB: written every epoch, that costs more than a fast epoch. So a checkpoint is written
    after the last epoch, and otherwise at most every ``checkpoint_s`` seconds and never more often than keeps
    the writes under ``SAVE_SHARE`` of the time (20x the last write's duration); every epoch if ``checkpoint_s``
    is 0."""

    def __init__(self, tc: TrainConfig, now: Callable[[], float] = time.perf_counter) -> None:
        self.tc, self.now = tc, now
        self.saved_at, self.save_s = now(), 0.0

    def due(self, epoch: int) -> bool:
        if epoch == self.tc.epochs or self.tc.checkpoint_s == 0:
            return True
        return self.now() - self.saved_at >= max(self.tc.checkpoint_s, self.save_s / SAVE_SHARE)

    @contextmanager
    def saving(self) -> Iterator[None]:
        """Around a write: times it, and restarts the interval when it ends."""
        t0 = self.now()
        yield
        self.saved_at = self.now()
        self.save_s = self.saved_at - t0


def is_trained(run_dir: str | Path, epochs: int) -> bool:
    """True if ``run_dir/history.csv`` has reached ``epochs`` and ``best.pt`` exists; no checkpoint is read
    (a VAE's is ~200 MB).

    The last epoch's checkpoints are written before its history row (``fit``, ``fit_stacked``), so such a
    history means both were. A best.pt damaged since shows when the run is evaluated, and
    ``experiments.run_configs`` trains it again.
    """
    run_dir = Path(run_dir)
    try:
        history = read_history(run_dir)
    except (OSError, ValueError, TypeError, KeyError):  # missing, or a row cut short
        return False
    return bool(history) and history[-1]["epoch"] >= epochs and (run_dir / "best.pt").is_file()
