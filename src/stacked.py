"""Train G runs of one architecture together on one device, as one stacked model.

PyTorch's model-ensembling recipe: ``torch.func.stack_module_state`` gives every parameter
and buffer of G ``train.RunObjective`` modules a leading run axis (G, ...), and ``vmap`` of
``functional_call`` runs the one definition of the model (``src/models.py``) and of the loss
and penalty over that axis: convolutions become grouped convolutions, linear layers batched
matrix products, a few large kernels per step instead of G times a few dozen tiny ones.

Each run keeps what ``fit`` gives it: its seed and initialisation (each model is built after
``set_seed(seed)``), its shuffle (``epoch_permutation(seed, epoch)``), its noise and eps draws
(``run_generator(seed, epoch)``; eps is drawn outside ``vmap``, which cannot use generators, in
the order ``LinearVAE.forward`` draws it), its regularizer, lambdas, beta and noise level (stacked
buffers), its history, best-by-validation copy and checkpoints, in its own run folder and in
``fit``'s format. A run trained here and the same run trained by ``fit`` agree to float32
rounding (tests/test_stacked.py); either can resume the other's checkpoints.

Measured on a 2-core CPU (benchmarks/RESULTS.md), the stack is slower than one run at a time:
one model's step already fills both cores, and the CPU kernels of grouped (transposed)
convolutions and of the batched products are slower than G plain ones. So
``default_parallel_runs`` is 1 on a CPU and all runs of a model on a CUDA GPU.

On CUDA each stacked step is captured once as a CUDA graph (``StackStep``: forward, backward and
the fused Adam update replayed as one launch; the inputs are copied into its static buffers) and
the stack is validated in one batched pass (``Stack.validate``); an epoch reads nothing back to
the host until its end. Each fast path is guarded: if the graph fails to capture, the plain
stacked step goes on from the same weights; if the plain stacked step fails on its first batch
(``StackUnavailable``), ``experiments.run_configs`` trains the runs one at a time. The path
taken and its images/s are logged in one "trainer:" line per stack. (The CUDA paths have not
been measured in this repository yet: no GPU was at hand; see docs/gpu.md.)
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from . import noise
from . import metrics as M
from .config import RunConfig, config_key
from .data import EVAL_BATCH, to_float
from .losses import compute_loss
from .models import build_model
from .regularization import add_penalty_grad
from .runs import CheckpointClock, TrainingDiverged, resident_split, start_run
from .train import RunObjective, epoch_permutation, finished_line, make_optimizer, pick_device, run_generator, train_step
from .utils import UserError, progress_bar, set_seed

# What may differ between the runs of one stack (everything else must be equal).
PER_RUN = {("train", "seed"), ("train", "noise_train"), ("train", "beta"), ("train", "progress"),
           ("reg", "kind"), ("reg", "l1"), ("reg", "l2")}


def stack_key(cfg: RunConfig) -> str:
    """Runs with equal keys can train as one stack: same model, data, batches, lr and epochs."""
    return config_key(cfg, PER_RUN)


def default_parallel_runs(device: torch.device) -> int:
    """Runs trained together when not told: all of a model's on a CUDA GPU (0 = no limit), else 1."""
    return 0 if device.type == "cuda" else 1


def stack_chunks(configs: dict[str, RunConfig], parallel_runs: int) -> list[list[str]]:
    """Names grouped by ``stack_key`` (in first-seen order), in chunks of ``parallel_runs`` (0: whole groups)."""
    groups: dict[str, list[str]] = {}
    for name, cfg in configs.items():
        groups.setdefault(stack_key(cfg), []).append(name)
    size = parallel_runs or max((len(g) for g in groups.values()), default=1)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


class Stack:
    """G ``RunObjective``s as one: each parameter and buffer is stacked along a leading run axis."""

    def __init__(self, models: list[torch.nn.Module], cfgs: list[RunConfig]) -> None:
        # the penalty terms any run uses; a run multiplies those it does not use by lambda = 0
        norms = tuple(k for i, k in enumerate(("l1", "l2")) if any(c.reg.lambdas[i] for c in cfgs))
        objectives = [RunObjective(m, c, norms).to(next(m.parameters()).device) for m, c in zip(models, cfgs)]
        self.keys = list(models[0].state_dict())  # one run's state_dict keys, in order
        self.params, self.buffers = stack_module_state(objectives)  # leaves (G, ...), requiring grad
        self.base = copy.deepcopy(objectives[0]).to("meta")  # the definition; its tensors come from the stack
        self.base.train()
        self.forward = self._forward

    def compile(self, mode: str = "reduce-overhead") -> None:
        """``torch.compile`` the stacked forward, loss and penalty (opt-in; for CUDA, not measured on a CPU)."""
        self.forward = torch.compile(self._forward, mode=mode)

    def __call__(self, x: torch.Tensor, inp: torch.Tensor, generator: None = None,
                 eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x, inp: (G, B, C, S, S); eps: (G, B, latent) for the VAE. Returns parts of shape (G,)."""
        if generator is not None:
            raise ValueError("vmap cannot draw from a generator: pass the stack's eps instead")
        return self.forward(self.params, self.buffers, x, inp, eps)

    def penalize_(self) -> torch.Tensor:
        """After backward: every run's penalty gradient added to its weights' (``add_penalty_grad`` with a
        leading run axis); the (G,) values."""
        base = self.base
        return add_penalty_grad([self.params[f"model.{n}"] for n in base.penalized], *base.lambdas(self.buffers),
                                runs=len(self.buffers["beta"]))

    def _forward(self, params, buffers, x, inp, eps):
        def one(params, buffers, x, inp, eps):
            return functional_call(self.base, (params, buffers), (x, inp), {"eps": eps})

        return vmap(one, in_dims=(0, 0, 0, 0, None if eps is None else 0))(params, buffers, x, inp, eps)

    @torch.no_grad()
    def validate(self, data: torch.Tensor, cfgs: list[RunConfig]) -> list[dict[str, float]]:
        """``train.validation_loss`` of every run at once (eval mode, VAE at z = mu, each run's fixed noise),
        one vmapped pass per chunk; ``data``: (N, S, S) uint8. One read to the host at the end."""
        model = self.base.model
        params = {k[len("model."):]: v for k, v in self.params.items() if k.startswith("model.")}
        buffers = {k[len("model."):]: v for k, v in self.buffers.items() if k.startswith("model.")}
        beta, name, recon = self.buffers["beta"], cfgs[0].model.name, cfgs[0].train.vae_recon
        gens = [torch.Generator(device=data.device).manual_seed(c.train.seed + 7) for c in cfgs]

        def one(params, buffers, beta, x, inp):
            out = functional_call(model, (params, buffers), (inp,))
            parts = compute_loss(name, out, x, beta=beta, vae_recon=recon)
            parts["mse"] = M.mse(out["x_hat"], x).sum() / x.shape[0]
            return parts

        model.eval()
        try:
            sums: dict[str, torch.Tensor] = {}
            for start in range(0, data.shape[0], EVAL_BATCH):
                x = to_float(data[start:start + EVAL_BATCH])  # (b, 1, S, S), the same for every run
                inp = torch.stack([noise.gaussian(x, c.train.noise_train, gen) for c, gen in zip(cfgs, gens)])
                parts = vmap(one, in_dims=(0, 0, 0, None, 0))(params, buffers, beta, x, inp)  # (G,) each
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0) + v * x.shape[0]
        finally:
            model.train()
        rows = (torch.stack(list(sums.values()), dim=1) / data.shape[0]).tolist()
        return [dict(zip(sums, row)) for row in rows]

    def run_state(self, g: int) -> dict[str, torch.Tensor]:
        """A private copy of run g's model ``state_dict``."""
        tensors = {**self.params, **self.buffers}
        return {k: tensors[f"model.{k}"][g].detach().clone() for k in self.keys}

    def select(self, keep: list[int], optimizer: torch.optim.Optimizer, tc, device) -> torch.optim.Optimizer:
        """Keep only the runs ``keep`` (weights and Adam state); returns the new optimizer."""
        state = slice_optimizer_state(optimizer.state_dict(), keep)
        self.params = {k: v.detach()[keep].clone().requires_grad_() for k, v in self.params.items()}
        self.buffers = {k: v[keep].clone() for k, v in self.buffers.items()}
        optimizer = make_optimizer(self.params.values(), tc, device)
        optimizer.load_state_dict(state)
        return optimizer


# Adam is elementwise: a stacked parameter's exp_avg / exp_avg_sq are the G runs' moments
# stacked, updated exactly as G separate Adams with the same lr would update them; only the step
# count is shared, and every run of a stack has taken the same number of steps.
def slice_optimizer_state(state: dict[str, Any], index: int | list[int]) -> dict[str, Any]:
    """The Adam state of run ``index`` (a one-run state, ``fit``'s format) or of the runs ``index`` (a stack)."""
    return {"state": {i: {k: v if k == "step" else v[index].clone() for k, v in s.items()}  # "step" is shared
                      for i, s in state["state"].items()},
            "param_groups": [{**g, "capturable": False} for g in copy.deepcopy(state["param_groups"])]}


def stack_optimizer_states(optimizer: torch.optim.Optimizer, states: list[dict[str, Any]]) -> dict[str, Any]:
    """The stacked Adam state of G one-run states (checkpoints of runs at the same epoch)."""
    out = optimizer.state_dict()
    out["state"] = {}
    for i, first in states[0]["state"].items():
        if any(not torch.equal(s["state"][i]["step"], first["step"]) for s in states):
            raise ValueError("runs stacked together must have taken the same number of steps")
        out["state"][i] = {k: v if k == "step" else torch.stack([s["state"][i][k] for s in states])
                           for k, v in first.items()}
    return out


class StackUnavailable(RuntimeError):
    """The plain stacked step failed on its first batch (e.g. out of memory): train these runs one at a time."""


GRAPH_DEVICES = ("cuda",)  # where StackStep tries a CUDA graph first
WARMUP_STEPS = 3  # eager steps before the capture (torch's recipe: lets the allocator and Adam's state settle)


class StackStep:
    """The training step of a stack on the fastest path that starts: "cuda graph", else "plain stacked".

    A CUDA graph of the whole step (forward, backward, fused Adam) is captured after ``WARMUP_STEPS``
    real, eager steps and replayed for every full batch; a batch of another shape (an epoch's last)
    takes the plain step, which updates the same weights and Adam state. If the capture raises, the
    plain step is used from then on (said in one line). If the plain step raises on the first batch,
    ``StackUnavailable`` is raised.
    """

    def __init__(self, stack: Stack, optimizer: torch.optim.Optimizer, device: torch.device, log=print) -> None:
        self.stack, self.optimizer, self.log = stack, optimizer, log
        self.path = "cuda graph" if device.type in GRAPH_DEVICES else "plain stacked"
        self.steps, self.graph, self.static = 0, None, None

    def __call__(self, x: torch.Tensor, inp: torch.Tensor, eps: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.steps += 1
        if self.path == "cuda graph" and self.steps > WARMUP_STEPS:
            if self.graph is None and (self.static is None or self.static[0].shape == x.shape):
                try:
                    self._capture(x, inp, eps)
                except Exception as e:  # noqa: BLE001 - any failure to capture: the plain step still works
                    self.graph, self.path = None, "plain stacked"
                    _capturable(self.optimizer, False)
                    self.optimizer.zero_grad(set_to_none=True)
                    self.log(f"trainer: the CUDA graph of the stacked step failed to capture "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                             "falling back to the plain stacked step")
            if self.graph is not None and self.static[0].shape == x.shape:
                for buf, new in zip(self.static, (x, inp, eps)):
                    if buf is not None:
                        buf.copy_(new)
                self.graph.replay()
                return {k: v.clone() for k, v in self.out.items()}
        if self.steps == 1:
            try:
                return train_step(self.stack, self.optimizer, x, inp, eps=eps)
            except RuntimeError as e:
                raise StackUnavailable(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from e
        return train_step(self.stack, self.optimizer, x, inp, eps=eps)

    def _capture(self, x: torch.Tensor, inp: torch.Tensor, eps: torch.Tensor | None) -> None:
        """Record one step on static copies of the inputs (nothing is computed until ``replay``)."""
        static = (x.clone(), inp.clone(), None if eps is None else eps.clone())
        _capturable(self.optimizer, True)  # Adam's update inside a graph keeps its step count on the device
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            parts = self.stack(static[0], static[1], eps=static[2])
            parts["loss"].sum().backward()
            self.optimizer.step()
        self.static, self.graph, self.out = static, graph, {k: v.detach() for k, v in parts.items()}


def _capturable(optimizer: torch.optim.Optimizer, on: bool) -> None:
    for group in optimizer.param_groups:
        group["capturable"] = on
    optimizer.defaults["capturable"] = on


def train_stack_epoch(stack: Stack, optimizer: torch.optim.Optimizer, data: torch.Tensor, cfgs: list[RunConfig],
                      epoch: int, step: StackStep | None = None) -> list[dict[str, float]]:
    """One pass of every run over ``data`` ((N, S, S) uint8), each in its own order; mean losses per image.

    ``step``: the stack's ``StackStep`` (None: the plain step)."""
    g_runs, n, bs = len(cfgs), data.shape[0], cfgs[0].train.batch_size
    perms = torch.stack([epoch_permutation(n, c.train.seed, epoch) for c in cfgs]).to(data.device)  # (G, N)
    gens = [run_generator(c.train.seed, epoch, data.device) for c in cfgs]
    latent = stack.base.model.latent_shape if cfgs[0].model.name == "vae" else None
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, n, bs):
        idx = perms[:, start:start + bs]  # (G, B)
        x = to_float(data[idx.reshape(-1)]).view(g_runs, idx.shape[1], 1, *data.shape[1:])  # (G, B, 1, S, S)
        inp = x
        if any(c.train.noise_train for c in cfgs):  # each run's noise from its own generator, as in fit
            inp = torch.stack([noise.gaussian(x[g], c.train.noise_train, gens[g]) if c.train.noise_train else x[g]
                               for g, c in enumerate(cfgs)])
        eps = None if latent is None else torch.stack([torch.randn((idx.shape[1], *latent), generator=gen,
                                                                   device=data.device) for gen in gens])
        parts = train_step(stack, optimizer, x, inp, eps=eps) if step is None else step(x, inp, eps)
        for k, v in parts.items():  # (G,) each, accumulated on the device
            sums[k] = sums.get(k, 0) + v * idx.shape[1]
    rows = (torch.stack(list(sums.values()), dim=1) / n).tolist()  # one read per epoch
    return [dict(zip(sums, row)) for row in rows]


class _Member:
    """One run of a stack: its config, bookkeeping, model (until stacked) and resumed Adam state."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool, device: torch.device, log) -> None:
        set_seed(cfg.train.seed)  # the initialisation fit gives this run
        self.cfg, self.model, self.error = cfg, build_model(cfg.model).to(device), None
        self.final_state: dict[str, torch.Tensor] | None = None  # the weights once the stack holds them
        self.run, self.optimizer_state = start_run(cfg, run_dir, self.model, resume, log)


def fit_stacked(cfgs: list[RunConfig], images: np.ndarray, run_dirs: list[str | Path], resume: bool = True,
                log=print) -> list[dict[str, Any]]:
    """Train the runs ``cfgs`` (one ``stack_key``) together; each as ``fit`` would, in its own folder.

    Runs resumed at different epochs are trained as one stack per starting epoch. A run whose loss
    becomes NaN or inf is stopped alone (its last good checkpoint is kept) and the others go on.
    ``amp`` applies; ``channels_last`` and ``compile`` (one-run fast paths) are ignored.

    Returns, per run, fit's result plus "error": the run's ``TrainingDiverged``, or None.
    """
    if len({stack_key(c) for c in cfgs}) > 1:
        raise UserError("runs trained together must share model, data, batch size, lr, epochs and device")
    if len({Path(d).resolve() for d in run_dirs}) < len(run_dirs):
        raise UserError("runs trained together need one folder each")
    device = pick_device(cfgs[0].train.device)
    members = [_Member(cfg, Path(d), resume, device, log) for cfg, d in zip(cfgs, run_dirs)]
    train_u8, val_u8 = resident_split(images, [m.run for m in members], device)
    for start in sorted({m.run.start_epoch for m in members}):
        group = [m for m in members if m.run.start_epoch == start and start <= m.cfg.train.epochs]
        if group:
            _train_group(group, start, train_u8, val_u8, device, log)
    results = []
    for m in members:
        model = build_model(m.cfg.model).to(device)
        model.load_state_dict(m.model.state_dict() if m.model is not None else m.final_state)
        results.append({**m.run.result(model), "error": m.error})
    return results


def _train_group(group: list[_Member], start: int, train_u8: torch.Tensor, val_u8: torch.Tensor,
                 device: torch.device, log) -> None:
    tc = group[0].cfg.train
    stack = Stack([m.model for m in group], [m.cfg for m in group])
    optimizer = make_optimizer(stack.params.values(), tc, device)
    if start > 1:
        optimizer.load_state_dict(stack_optimizer_states(optimizer, [m.optimizer_state for m in group]))
    for m in group:
        m.model, m.optimizer_state = None, None  # the stack holds the weights now
    name = f"{len(group)} {group[0].cfg.model.name} runs"
    log(f"training {name} together from epoch {start} on {device}: " + ", ".join(m.run.run_dir.name for m in group))
    bar = progress_bar(range(start, tc.epochs + 1), show=tc.progress, desc=f"{len(group)} runs", unit="epoch",
                       initial=start - 1, total=tc.epochs)
    clock, step = CheckpointClock(tc), StackStep(stack, optimizer, device, log)
    images = seconds_total = 0.0
    for epoch in bar:
        t0 = time.perf_counter()
        trs = train_stack_epoch(stack, optimizer, train_u8, [m.cfg for m in group], epoch, step)
        vas = stack.validate(val_u8, [m.cfg for m in group])  # reads the epoch's losses: its one sync
        seconds = time.perf_counter() - t0  # the stack's epoch: every run's training and validation
        states, keep = [stack.run_state(g) for g in range(len(group))], []
        images, seconds_total = images + len(group) * train_u8.shape[0], seconds_total + seconds
        if epoch - start in (0, 1) or epoch == tc.epochs:  # the first (with any capture), a steady one, the whole
            log(f"trainer: {step.path}, {name}: {len(group) * train_u8.shape[0] / seconds:,.0f} images/s in epoch "
                f"{epoch}" + (f"; {images / seconds_total:,.0f} images/s over {epoch - start + 1} epochs "
                              f"({seconds_total:.0f} s, validation included)" if epoch == tc.epochs else ""))
        for g, (m, tr, va) in enumerate(zip(group, trs, vas)):
            try:
                m.run.end_epoch(epoch, tr, va, seconds, lambda s=states[g]: s)
                keep.append(g)
            except TrainingDiverged as e:
                m.error, m.final_state = e, states[g]
                log(f"{m.run.run_dir.name}: {e}; the other runs go on")
        if clock.due(epoch):
            with clock.saving():
                full = optimizer.state_dict()
                for g in keep:
                    group[g].run.save(states[g], slice_optimizer_state(full, g), epoch)
        for g in keep:
            group[g].run.write_history()
            group[g].final_state = states[g]
        if len(keep) < len(group):
            if not keep:
                return
            optimizer = stack.select(keep, optimizer, tc, device)
            group = [group[g] for g in keep]
            step = StackStep(stack, optimizer, device, log)  # a graph of the old stack would write the old tensors
        bar.set_postfix(best=min(m.run.best_val for m in group))
    if bar.disable:  # no bar drawn: one line per finished run instead
        for m in group:
            log(finished_line(m.run))
