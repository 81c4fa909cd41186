"""Training: ``train_step`` (one optimizer step), ``fit`` (one run); ``stacked.py`` fits many.

A run folder (config, split, history, checkpoints) is ``runs``'s: ``fit`` and ``stacked.fit_stacked``
start, resume and save through it.

The whole dataset split is moved to the device once as uint8 and converted per batch;
losses are accumulated on the device and read once per epoch (no per-step host sync).

A run's random draws depend on its own seed only: the shuffle on (seed, epoch), the input
noise and the VAE's eps on a generator seeded from (seed, epoch) (``run_generator``). So a
resumed run draws as an uninterrupted one, and a run trained alone (``fit``) draws as the same
run trained in a stack (``stacked.fit_stacked``), with nothing extra in the checkpoint.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import metrics as M
from . import noise
from .config import RunConfig, TrainConfig
from .data import eval_batches, to_float
from .losses import compute_loss
from .models import build_model
from .regularization import add_penalty_grad, is_penalized
from .runs import CheckpointClock, RunState, resident_split, start_run
from .utils import UserError, keep_freed_memory, progress_bar, set_seed


def pick_device(name: str = "auto") -> torch.device:
    """The device ``name`` names ("auto": CUDA, then MPS, then the CPU); on the CPU it also tunes the heap."""
    dev = _resolve_device(name)
    if dev.type == "cpu":
        keep_freed_memory()  # 1.1-1.3x a VAE step; up to 2x with a weight penalty (benchmarks/RESULTS.md)
    return dev


def _resolve_device(name: str) -> torch.device:
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


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The (n,) shuffle of one epoch, drawn on the CPU (the same order on every device) from (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def epoch_batches(data: torch.Tensor, batch_size: int, seed: int, epoch: int):
    """Yield the (B, 1, S, S) float32 batches of one shuffled pass over ``data`` ((N, S, S) uint8).

    The permutation depends on (seed, epoch) only, so a resumed run shuffles exactly as an
    uninterrupted one. It is moved to the data's device once per epoch, and each batch is
    gathered and converted there.
    """
    perm = epoch_permutation(data.shape[0], seed, epoch).to(data.device)
    for start in range(0, data.shape[0], batch_size):
        yield to_float(data[perm[start:start + batch_size]])


def run_generator(seed: int, epoch: int, device: torch.device | str) -> torch.Generator:
    """The generator of one run's draws in one epoch: per step, the input noise, then the VAE's eps."""
    words = np.random.SeedSequence([seed % 2**32, epoch]).generate_state(2)  # independent of the shuffle's seed
    return torch.Generator(device=device).manual_seed(int(words[0]) << 32 | int(words[1]))


def make_optimizer(params: Iterable[torch.Tensor], tc: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam; fused on CPU and CUDA unless ``tc.fused_adam`` is off (on a CPU torch's default is a
    per-tensor loop of small ops, which cost the VAE about a third of its step)."""
    optimizer = torch.optim.Adam(params, lr=tc.lr, fused=tc.fused_adam and device.type in ("cpu", "cuda"))
    optimizer.register_load_state_dict_post_hook(_moments_like_weights)
    return optimizer


def _moments_like_weights(optimizer: torch.optim.Optimizer) -> None:
    """After a load: each state tensor in its weight's memory layout. torch's fused CPU Adam pairs them by
    memory position, so contiguous moments loaded for a channels_last weight (a checkpoint of the other
    layout, or of a stack) would update the wrong elements."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)  # empty_like keeps p's strides


def uses_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """``cfg.train.channels_last``, where None means: on for the ConvAE on a CPU, where its NHWC convolutions
    are faster (1.2-1.6x the step, benchmarks/RESULTS.md), off elsewhere (not measured)."""
    flag = cfg.train.channels_last
    return flag if flag is not None else cfg.model.name == "ae" and device.type == "cpu"


class RunObjective(torch.nn.Module):
    """One run's objective: forward and ``compute_loss``, then (``penalize_``, after backward) the weight penalty.

    ``forward`` returns {"loss" (without the penalty), "recon", ["kl"]}, 0-d tensors; ``train_step`` adds
    "penalty" and puts it into "loss". The run's beta and lambdas are buffers, so the stacked trainer calls
    this same module through ``vmap`` with every run's weights *and* hyper-parameters stacked. ``norms``
    are the penalty terms computed ("l1", "l2"): one run computes those it uses; a stack computes the union,
    each multiplied by the run's lambda (0 for a term the run does not use: it adds exactly nothing).
    """

    def __init__(self, model: torch.nn.Module, cfg: RunConfig, norms: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.model, self.name, self.recon, self.amp = model, cfg.model.name, cfg.train.vae_recon, cfg.train.amp
        lam1, lam2 = cfg.reg.lambdas
        self.norms = tuple(k for k, lam in (("l1", lam1), ("l2", lam2)) if lam) if norms is None else norms
        self.penalized = [n for n, _ in model.named_parameters() if is_penalized(n, cfg.reg)]
        self.register_buffer("beta", torch.tensor(float(cfg.train.beta)))
        self.register_buffer("l1", torch.tensor(float(lam1)))
        self.register_buffer("l2", torch.tensor(float(lam2)))

    def forward(self, x: torch.Tensor, inp: torch.Tensor, generator: torch.Generator | None = None,
                eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x: clean targets, inp: model inputs (noisy or not), (B, C, S, S) each; eps: the VAE's
        (B, latent) draw, drawn from ``generator`` when not given."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(inp, generator) if eps is None else self.model(inp, eps=eps)
        if self.amp:  # the loss in float32: BCE takes logs of x_hat
            out = {k: v.float() for k, v in out.items()}
        return compute_loss(self.name, out, x, beta=self.beta, vae_recon=self.recon)

    def lambdas(self, buffers: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(l1, l2) from ``buffers`` (this module's, or a stack's), None for a term not computed."""
        return tuple(buffers[k] if k in self.norms else None for k in ("l1", "l2"))

    def penalize_(self) -> torch.Tensor:
        """After backward: the penalty's gradient added to the weights' (``add_penalty_grad``); its value."""
        params = dict(self.model.named_parameters())
        return add_penalty_grad([params[n] for n in self.penalized], *self.lambdas({"l1": self.l1, "l2": self.l2}))


def train_step(objective: Callable[..., dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer,
               x: torch.Tensor, inp: torch.Tensor, *, generator: torch.Generator | None = None,
               eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One optimizer step: the objective's forward and loss, backward, the penalty's gradient, then Adam.

    ``objective`` is one run's ``RunObjective`` (parts are 0-d), or G of them stacked
    (``stacked.Stack``: x, inp and eps gain a leading run axis, parts are (G,)). The runs of a
    stack are independent, so the gradient of their summed losses with respect to run g's
    weights is that of run g's loss alone. Returns the detached parts.
    """
    parts = objective(x, inp, generator=generator, eps=eps)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].sum().backward()
    parts["penalty"] = objective.penalize_()  # at the weights of this step, before Adam moves them
    parts = {k: v.detach() for k, v in parts.items()}
    parts["loss"] = parts["loss"] + parts["penalty"]
    optimizer.step()
    return parts


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor,
                    cfg: RunConfig, epoch: int) -> dict[str, float]:
    """One pass over ``data`` ((N, S, S) uint8 on the model's device); mean losses per image."""
    model.train()
    n, bs, tc = data.shape[0], cfg.train.batch_size, cfg.train
    objective = RunObjective(model, cfg).to(data.device)
    gen = run_generator(tc.seed, epoch, data.device)
    sums: dict[str, torch.Tensor] = {}
    nhwc = uses_channels_last(cfg, data.device)
    bar = progress_bar(epoch_batches(data, bs, tc.seed, epoch), show=tc.progress, inner=True,
                       total=math.ceil(n / bs), desc=f"epoch {epoch}", leave=False, unit="batch")
    for x in bar:  # (B, 1, S, S) clean target
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        inp = noise.gaussian(x, tc.noise_train, gen) if tc.noise_train else x
        parts = train_step(objective, optimizer, x, inp, generator=gen)
        for k, v in parts.items():  # accumulated on the device: no host sync per step
            sums[k] = sums.get(k, 0) + v * x.shape[0]
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
    for x in eval_batches(data):
        inp = noise.gaussian(x, cfg.train.noise_train, gen) if cfg.train.noise_train else x
        out = model(inp)
        parts = compute_loss(cfg.model.name, out, x, beta=cfg.train.beta, vae_recon=cfg.train.vae_recon)
        parts["mse"] = M.mse(out["x_hat"], x).sum() / x.shape[0]
        for k, v in parts.items():
            sums[k] = sums.get(k, 0) + v * x.shape[0]
    return {k: float(v) / data.shape[0] for k, v in sums.items()}


def fit(cfg: RunConfig, images: np.ndarray, run_dir: str | Path, *, resume: bool = False,
        log=print, final_checkpoint: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on ``images`` ((N, S, S) uint8) and keep the best-by-validation weights.

    Args:
        cfg: the run's configuration; saved to ``run_dir/config.json``.
        images: the whole dataset; the split comes from ``cfg.data``.
        run_dir: output folder (created).
        resume: continue from ``run_dir/last.pt`` if it exists. Without it, an existing
            checkpoint is an error, so finished work is never silently overwritten.
        final_checkpoint: False: after the last epoch write best.pt only, and remove an earlier last.pt
            (it serves to train the run further). For callers that delete last.pt once the run is
            evaluated anyway: the grid and rd's latent sizes without ``keep_last``; a VAE's is 205 MB.

    Returns:
        {"history": rows, "best_epoch", "best_val", "best_state" (a deep copy), "model"}.
    """
    device = pick_device(cfg.train.device)
    set_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device)
    if uses_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), cfg.train, device)
    run, optimizer_state = start_run(cfg, run_dir, model, resume, log)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    train_u8, val_u8 = resident_split(images, [run], device)

    if cfg.train.compile:
        model.compile()  # in place: state_dict keys and parameters stay those of the plain model
    bar = progress_bar(range(run.start_epoch, cfg.train.epochs + 1), show=cfg.train.progress, desc=run.run_dir.name,
                       unit="epoch", initial=run.start_epoch - 1, total=cfg.train.epochs)
    clock = CheckpointClock(cfg.train)
    for epoch in bar:
        t0 = time.perf_counter()
        tr = train_one_epoch(model, optimizer, train_u8, cfg, epoch)
        va = validation_loss(model, val_u8, cfg)
        run.end_epoch(epoch, tr, va, time.perf_counter() - t0, lambda: copy.deepcopy(model.state_dict()))
        if clock.due(epoch):
            with clock.saving():
                run.save(model.state_dict(), optimizer.state_dict(), epoch,
                         last=final_checkpoint or epoch < cfg.train.epochs)
        run.write_history()
        bar.set_postfix(train=f"{tr['loss']:.4g}", val=f"{va['loss']:.4g}", best=run.best_epoch)
    if not final_checkpoint and run.history and run.history[-1]["epoch"] >= cfg.train.epochs:
        (run.run_dir / "last.pt").unlink(missing_ok=True)  # after history.csv: the run reads as trained first
    if bar.disable and run.start_epoch <= cfg.train.epochs:  # no bar drawn: one line per finished run instead
        log(finished_line(run))
    return run.result(model)


def finished_line(run: RunState) -> str:
    """"<run>: 20 epochs (12.3 s), best epoch 9 (val loss 0.01234)": what a log gets instead of a bar."""
    seconds = sum(r.get("seconds", 0.0) for r in run.history)
    return (f"{run.run_dir.name}: {len(run.history)} epochs ({seconds:.1f} s), best epoch {run.best_epoch} "
            f"(val loss {run.best_val:.5g})")
