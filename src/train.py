"""Training: ``fit`` serves both models; evaluation is in ``evaluation.py``.

A run folder holds (all written atomically: temp file, then rename)::

    config.json     the whole RunConfig (model, reg, train, data)
    split.npz       the train/val/test indices used
    history.csv     one row per finished epoch
    last.pt         checkpoint {"model", "optimizer", "config", "epoch", "best_val",
                    "best_epoch", "rng", "history"}, rewritten at most every
                    ``checkpoint_s`` seconds and after the last epoch
    best.pt         the weights of the epoch with the lowest validation loss (a copy)
    per_image.npz   per-image metrics, written by ``evaluate_run``
    metrics.json    split x condition means; written last, it marks a finished run

The whole dataset split is moved to the device once as uint8 and converted per batch;
losses are accumulated on the device and read once per epoch (no per-step host sync).
"""
from __future__ import annotations

import copy
import csv
import io
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # plain tqdm: tqdm.auto warns in notebooks without ipywidgets

from . import metrics as M
from . import noise
from .checkpoint import load_torch, rng_state, save_torch, set_rng_state
from .data import DataConfig, split_indices, to_float
from .losses import compute_loss
from .models import ModelConfig, build_model
from .regularization import RegConfig, penalty
from .utils import UserError, save_npz, set_seed, write_json, write_text

EVAL_BATCH = 500  # validation batch size (evaluation.py uses the same)


@dataclass
class TrainConfig:
    epochs: int = 200           # full protocol of the original study
    batch_size: int = 128       # images per optimizer step
    lr: float = 1e-3            # Adam learning rate
    noise_train: float = 0.0    # sigma of Gaussian noise on training inputs (0 = clean; targets stay clean)
    beta: float = 1.0           # VAE: weight of the KL term
    vae_recon: str = "bce"      # VAE: reconstruction term, "bce" or "mse" (summed per image)
    seed: int = 0               # seeds init, shuffling, noise and VAE sampling
    device: str = "auto"        # auto = cuda, else mps, else cpu
    progress: bool = True       # tqdm bars
    amp: bool = False           # bf16 autocast of the training forward pass (evaluation stays float32)
    channels_last: bool = False  # NHWC memory layout for the model and its inputs (conv models)
    compile: bool = False       # torch.compile the model (the first epoch pays the compile time)
    checkpoint_s: float = 60.0  # write last.pt / best.pt at most this often, and after the last epoch; 0 = every epoch
    fused_adam: bool = True     # Adam's update as one fused kernel per tensor (CPU, CUDA); False = torch's op-by-op loop

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if self.noise_train < 0:
            raise UserError(f"noise sigma must be >= 0, got {self.noise_train}")
        if not self.checkpoint_s >= 0:
            raise UserError(f"checkpoint interval must be >= 0 seconds, got {self.checkpoint_s}")
        if self.beta < 0:
            raise UserError(f"beta must be >= 0, got {self.beta}")
        if self.vae_recon not in ("bce", "mse"):
            raise UserError(f"vae_recon must be 'bce' or 'mse', got {self.vae_recon!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Inverse of ``to_dict``; unknown sections or keys are errors."""
        parts = {f.name: f.type for f in fields(cls)}
        unknown = set(d) - set(parts)
        if unknown:
            raise UserError(f"unknown config section(s): {sorted(unknown)}")
        types = {"model": ModelConfig, "reg": RegConfig, "train": TrainConfig, "data": DataConfig}
        return cls(**{k: _dataclass_from(types[k], d.get(k, {})) for k in parts})


def _dataclass_from(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise UserError(f"unknown {cls.__name__} key(s): {sorted(unknown)}")
    d = dict(d)
    if cls is DataConfig and isinstance(d.get("split"), list):
        d["split"] = tuple(d["split"])  # JSON has no tuples
    return cls(**d)


# Settings that may differ between an interrupted run and its resumption.
_RESUMABLE = {("train", "epochs"), ("train", "device"), ("train", "progress"), ("train", "channels_last"),
              ("train", "compile"), ("train", "checkpoint_s"), ("train", "fused_adam")}  # speed, not the objective


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise UserError(f"unknown device {name!r} ({e})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but CUDA is not available; use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class TrainingDiverged(UserError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


def epoch_batches(data: torch.Tensor, batch_size: int, seed: int, epoch: int):
    """Yield the (B, 1, S, S) float32 batches of one shuffled pass over ``data`` ((N, S, S) uint8).

    The permutation depends on (seed, epoch) only, so a resumed run shuffles exactly as an
    uninterrupted one. It is drawn on the CPU (the same order on every device), moved to the
    data's device once per epoch, and each batch is gathered and converted there.
    """
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    perm = perm.to(data.device)
    for start in range(0, data.shape[0], batch_size):
        yield to_float(data[perm[start:start + batch_size]])


def make_optimizer(model: torch.nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam; fused on CPU and CUDA unless ``tc.fused_adam`` is off (on a CPU torch's default is a
    per-tensor loop of small ops, which cost the VAE about a third of its step)."""
    return torch.optim.Adam(model.parameters(), lr=tc.lr, fused=tc.fused_adam and device.type in ("cpu", "cuda"))


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor,
                    cfg: RunConfig, epoch: int) -> dict[str, float]:
    """One pass over ``data`` ((N, S, S) uint8 on the model's device); mean losses per image."""
    model.train()
    n, bs, tc = data.shape[0], cfg.train.batch_size, cfg.train
    sums: dict[str, torch.Tensor] = {}
    bar = tqdm(epoch_batches(data, bs, tc.seed, epoch), total=math.ceil(n / bs), desc=f"epoch {epoch}",
               leave=False, disable=not tc.progress, unit="batch")
    for x in bar:  # (B, 1, S, S) clean target
        if tc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        inp = noise.gaussian(x, tc.noise_train) if tc.noise_train else x
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=tc.amp):
            out = model(inp)
        if tc.amp:  # the loss in float32: BCE takes logs of x_hat
            out = {k: v.float() for k, v in out.items()}
        parts = compute_loss(cfg.model.name, out, x, beta=cfg.train.beta, vae_recon=cfg.train.vae_recon)
        parts["penalty"] = penalty(model, cfg.reg)
        total = parts["loss"] + parts["penalty"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        parts["loss"] = total
        for k, v in parts.items():  # accumulated on the device: no host sync per step
            sums[k] = sums.get(k, 0) + v.detach() * x.shape[0]
    return {k: float(v) / n for k, v in sums.items()}


@torch.no_grad()
def validation_loss(model: torch.nn.Module, data: torch.Tensor, cfg: RunConfig) -> dict[str, float]:
    """Objective on ``data`` (without the weight penalty) in eval mode, VAE at z = mu.

    Inputs get the training noise level, drawn from a fixed generator so every epoch
    sees the same noisy validation images.
    """
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(cfg.train.seed + 7)
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, data.shape[0], EVAL_BATCH):
        x = to_float(data[start:start + EVAL_BATCH])
        inp = noise.gaussian(x, cfg.train.noise_train, gen) if cfg.train.noise_train else x
        out = model(inp)
        parts = compute_loss(cfg.model.name, out, x, beta=cfg.train.beta, vae_recon=cfg.train.vae_recon)
        parts["mse"] = M.mse(out["x_hat"], x).sum() / x.shape[0]
        for k, v in parts.items():
            sums[k] = sums.get(k, 0) + v * x.shape[0]
    return {k: float(v) / data.shape[0] for k, v in sums.items()}


def _write_history(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    keys = list(rows[0]) if rows else ["epoch"]
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = RunConfig.from_dict(cfg).to_dict()  # fills settings added after the checkpoint was written
    return {s: {k: v for k, v in sec.items() if (s, k) not in _RESUMABLE} for s, sec in cfg.items()}


def fit(cfg: RunConfig, images: np.ndarray, run_dir: str | Path, *, resume: bool = False,
        log=print) -> dict[str, Any]:
    """Train ``cfg.model`` on ``images`` ((N, S, S) uint8) and keep the best-by-validation weights.

    Args:
        cfg: the run's configuration; saved to ``run_dir/config.json``.
        images: the whole dataset; the split comes from ``cfg.data``.
        run_dir: output folder (created).
        resume: continue from ``run_dir/last.pt`` if it exists. Without it, an existing
            checkpoint is an error, so finished work is never silently overwritten.

    Returns:
        {"history": rows, "best_epoch", "best_val", "best_state" (a deep copy), "model"}.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is an existing file, not a folder")
    device = pick_device(cfg.train.device)
    set_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.train, device)
    split = split_indices(len(images), cfg.data.split, cfg.data.split_seed)

    history: list[dict[str, float]] = []
    start_epoch, best_val, best_epoch = 1, math.inf, 0
    best_state = None
    ckpt_path = run_dir / "last.pt"
    if ckpt_path.exists():
        if not resume:
            raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        try:
            ckpt = load_torch(ckpt_path)
            best_ckpt = load_torch(run_dir / "best.pt")  # written before last.pt: without it "best" is lost
        except ValueError as e:
            warnings.warn(f"{e}; starting this run again from epoch 1", stacklevel=2)
        else:
            if _comparable(ckpt["config"]) != _comparable(cfg.to_dict()):
                raise UserError(f"{run_dir} was trained with a different configuration; use another --out")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            set_rng_state(ckpt["rng"])
            history, best_val, best_epoch = ckpt["history"], ckpt["best_val"], ckpt["best_epoch"]
            start_epoch = ckpt["epoch"] + 1
            best_state = best_ckpt["model"]
            log(f"resuming {run_dir} after epoch {ckpt['epoch']}")

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", cfg.to_dict())
    save_npz(run_dir / "split.npz", split)
    train_u8 = torch.from_numpy(np.ascontiguousarray(images[split["train"]])).to(device)  # (Ntr, S, S) uint8
    val_u8 = torch.from_numpy(np.ascontiguousarray(images[split["val"]])).to(device)

    if cfg.train.compile:
        model.compile()  # in place: state_dict keys and parameters stay those of the plain model
    epochs = range(start_epoch, cfg.train.epochs + 1)
    bar = tqdm(epochs, desc=run_dir.name, disable=not cfg.train.progress, unit="epoch",
               initial=start_epoch - 1, total=cfg.train.epochs)
    # A VAE checkpoint (weights + Adam moments) is ~200 MB: written every epoch it costs more than
    # a fast epoch, so last.pt / best.pt are written at most every checkpoint_s and after the last epoch.
    saved_epoch, saved_at, best_unsaved = start_epoch - 1, time.perf_counter(), False
    for epoch in bar:
        t0 = time.perf_counter()
        tr = train_one_epoch(model, optimizer, train_u8, cfg, epoch)
        va = validation_loss(model, val_u8, cfg)
        if not all(math.isfinite(v) for v in (*tr.values(), *va.values())):
            good = f"; the last good checkpoint is {ckpt_path} (epoch {saved_epoch})" if saved_epoch else ""
            raise TrainingDiverged(f"training diverged at epoch {epoch} (train loss {tr['loss']}, "
                                   f"val loss {va['loss']}): lower the learning rate{good}")
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in tr.items()},
               **{f"val_{k}": v for k, v in va.items()}, "seconds": time.perf_counter() - t0}
        history.append(row)
        if va["loss"] < best_val:  # update "best" only on improvement, and keep a real copy
            best_val, best_epoch = va["loss"], epoch
            best_state = copy.deepcopy(model.state_dict())
            best_unsaved = True
        if epoch == cfg.train.epochs or time.perf_counter() - saved_at >= cfg.train.checkpoint_s:
            if best_unsaved:  # best.pt before last.pt: a checkpoint never names a best that is not on disk
                save_torch({"model": best_state, "config": cfg.to_dict(), "epoch": best_epoch,
                            "val_loss": best_val}, run_dir / "best.pt")
            save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": cfg.to_dict(),
                        "epoch": epoch, "best_val": best_val, "best_epoch": best_epoch, "rng": rng_state(),
                        "history": history}, ckpt_path)
            saved_epoch, saved_at, best_unsaved = epoch, time.perf_counter(), False
        _write_history(run_dir / "history.csv", history)
        bar.set_postfix(train=f"{tr['loss']:.4g}", val=f"{va['loss']:.4g}", best=best_epoch)
    return {"history": history, "best_epoch": best_epoch, "best_val": best_val,
            "best_state": best_state, "model": model}


def is_trained(run_dir: str | Path, epochs: int) -> bool:
    """True if ``run_dir/last.pt`` is readable and has reached ``epochs``, and ``best.pt`` is readable."""
    try:
        run_dir = Path(run_dir)
        return load_torch(run_dir / "last.pt")["epoch"] >= epochs and load_torch(run_dir / "best.pt") is not None
    except (ValueError, FileNotFoundError, KeyError):
        return False


