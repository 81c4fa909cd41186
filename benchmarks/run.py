"""One-process speed benchmark of the project: data, training, evaluation, peak memory.

    python -m benchmarks.run                      # default sizes: <= 3 min on 2 CPU cores
    python benchmarks/run.py --n 70000 --epochs 1  # the 70k-image data target (long)
    python -m benchmarks.run --n 80 --epochs 1 --eval-n 40 --out /tmp/b.json   # seconds

It prints a table and writes JSON (default ``benchmarks/out/results.json``) with:

- data: cold decode of N generated PNG files through ``src.data.load_images`` (all cores,
  a fresh cache folder; the files themselves are in the OS page cache, so this is decode
  cost, not disk cost), the cached reload, and one epoch of batches from a naive
  PNG-decoding ``torch.utils.data.DataLoader`` vs the project's resident-uint8 pipeline;
- training: images/s of ``src.train.fit`` as the grid calls it (whole call: validation, best.pt,
  setup; no last.pt after the last epoch), the fastest of ``--repeat`` fits,
  vs the compute bound (forward + loss + backward + Adam step on one fixed resident
  batch, no data pipeline), plus the bound with each fast path of ``--variants``: bf16
  autocast, channels_last, ``torch.compile`` (opt-in flags), and ``no_fused_adam`` /
  ``no_channels_last``, which measure the fused-Adam default against torch's per-tensor loop and
  the ConvAE's NHWC default on a CPU against the plain NCHW layout;
- evaluation: ``src.metrics`` batched SSIM / PSNR vs scikit-image's per-image functions
  on the same images: images/s, ratio, max absolute difference;
- stacked: images/s of ``src.stacked`` training G runs as one model, for each G of
  ``--stacked-g`` (default 1 8 16 48 on CUDA, 1 2 elsewhere), against one run at a time
  (``fit``'s epoch loop, ``train_one_epoch``), both over whole epochs of the same resident
  images without validation; and each one's ratio to the memory-bandwidth limit of the
  device, with the bytes per image estimated and the arithmetic written out;
- memory: peak RSS of this process and of its children; on CUDA the peak allocated;
- the targets of issue #6 with the measured value and whether it is met.

Every figure is measured in this process; the JSON records the machine (device, CPU,
cores, threads, torch version, load average before and after, the share of CPU time the host stole) and
the date.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: the repository, not this folder, goes on the path
    _here = Path(__file__).resolve().parent  # (files here must not shadow modules such as the stdlib's)
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

import numpy as np
import torch
from PIL import Image

from src import metrics as M
from src import sample
from src.config import KINDS, DataConfig, ModelConfig, RegConfig, RunConfig, TrainConfig
from src.data import EVAL_BATCH, load_images, split_indices, to_float
from src.parallel import cpu_workers
from src.models import build_model, count_parameters
from src.stacked import Stack, train_stack_epoch
from src.train import (RunObjective, epoch_batches, fit, make_optimizer, pick_device, run_generator, train_one_epoch,
                       train_step, uses_channels_last)
from src.utils import UserError, set_seed, write_json

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out" / "results.json"
DEFAULT_WORK = HERE / "out" / "work"
VARIANTS = ("amp", "channels_last", "compile", "no_fused_adam", "no_channels_last")  # no_*: the default's gain


# ----------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``, with the device synchronized before and after."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE.parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_isa() -> dict[str, Any]:
    """The CPU's vendor, the vector/matrix extensions of ISA_FLAGS it reports, and the kernels torch picked."""
    flags: set[str] = set()
    vendor = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("vendor_id") and vendor is None:
                vendor = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: None)()
    return {"vendor": vendor, "isa": [f for f in ISA_FLAGS if f in flags], "torch_cpu_capability": cap}


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (``/proc/stat``: user nice system idle iowait irq softirq steal), or
    None off Linux."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None


def steal_share(start: list[int] | None, end: list[int] | None) -> float | None:
    """The share of CPU time between two ``cpu_times`` that the hypervisor gave to other guests (steal):
    on a shared virtual machine "idle" is not enough, the host may still slow every figure."""
    if not start or not end or sum(end) <= sum(start):
        return None
    return (end[7] - start[7]) / (sum(end) - sum(start))


def machine_info(device: torch.device) -> dict[str, Any]:
    cores = os.cpu_count()
    usable = cpu_workers()
    info = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
            "cpu": _cpu_model(), **cpu_isa(), "cores": cores, "usable_cores": usable,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "git": _git_commit(), "loadavg_start": list(os.getloadavg()),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "KMP_", "GOMP_"))}}
    try:
        import skimage

        info["skimage"] = skimage.__version__
    except ImportError:
        info["skimage"] = None
    return info


# ----------------------------------------------------------------------------- data
class NaivePNG(torch.utils.data.Dataset):
    """The naive baseline: every epoch opens and decodes each PNG file again."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            a = np.asarray(im.convert("L"), dtype=np.uint8)
        return torch.from_numpy(a.copy()).float().div_(255.0).unsqueeze(0)  # (1, S, S)


def bench_data(n: int, size: int, work: Path, device: torch.device, batch_size: int, workers: int, epochs: int,
               repeat: int, log: Callable[[str], None]) -> tuple[dict[str, Any], np.ndarray]:
    """Decode (cold, cached) and the per-epoch batch pipelines; returns (results, images)."""
    root = work / f"faces-{n}-{size}px"
    t0 = time.perf_counter()
    files = sample.write_sample(root, n=n, seed=0, size=size, progress=False)  # kept between runs
    gen_s = time.perf_counter() - t0
    log(f"data: {n} generated PNG files in {root} ({gen_s:.1f} s to make or check)")

    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    try:
        load = lambda: load_images(root, size, cache_dir=cache, workers=workers, progress=False)  # noqa: E731
        cold_s, faces = _timed(load, device)
        cached_s, again = _timed(load, device)
        if again.images.shape != faces.images.shape or not np.array_equal(again.images[:8], faces.images[:8]):
            raise RuntimeError("cached reload differs from the cold decode")  # a bug, not a user error
        images = np.array(faces.images)  # (N, S, S) uint8, a writable copy of the memory map
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    # naive: a Dataset of PNG paths, decoded again by DataLoader workers every epoch
    loader = torch.utils.data.DataLoader(NaivePNG(files), batch_size=batch_size, shuffle=True,
                                         num_workers=workers if workers > 1 else 0,
                                         generator=torch.Generator().manual_seed(0))

    def naive_epochs() -> int:
        seen = 0
        for _ in range(epochs):
            for x in loader:
                seen += x.to(device).shape[0]
        return seen

    naive_s, naive_n = min((_timed(naive_epochs, device) for _ in range(repeat)), key=lambda tn: tn[0])

    # the project: the set resident on the device as uint8, shuffled by index, converted per batch
    to_dev_s, data = _timed(lambda: torch.from_numpy(images).to(device), device)

    def project_epochs() -> int:
        seen = 0
        for epoch in range(1, epochs + 1):
            for x in epoch_batches(data, batch_size, 0, epoch):
                seen += x.shape[0]
        return seen

    project_epochs()  # warm-up (allocator)
    proj_s, proj_n = min((_timed(project_epochs, device) for _ in range(repeat)), key=lambda tn: tn[0])
    assert naive_n == proj_n == n * epochs
    res = {"n_files": n, "image_size": size, "root": str(root), "generate_or_check_s": gen_s, "workers": workers,
           "cold_decode_s": cold_s, "cold_decode_images_per_s": n / cold_s, "cached_reload_s": cached_s,
           "batches": {"epochs": epochs, "batch_size": batch_size,
                       "naive_dataloader_images_per_s": naive_n / naive_s,
                       "project_images_per_s": proj_n / proj_s, "to_device_once_s": to_dev_s,
                       "ratio_project_over_naive": (proj_n / proj_s) / (naive_n / naive_s)}}
    return res, images


# ----------------------------------------------------------------------------- training
def _run_config(name: str, image_size: int, epochs: int, batch_size: int, device: torch.device,
                **flags: bool) -> RunConfig:
    return RunConfig(model=ModelConfig(name=name, image_size=image_size), reg=RegConfig(kind="none"),
                     train=TrainConfig(epochs=epochs, batch_size=batch_size, device=str(device), progress=False,
                                       **flags),
                     data=DataConfig(image_size=image_size))


def compute_bound(cfg: RunConfig, batch_u8: np.ndarray, steps: int, device: torch.device,
                  repeat: int = 1) -> dict[str, float]:
    """Images/s of forward + loss + backward + Adam step on one fixed batch already on the device.

    ``src.train.train_step``, the step of ``train_one_epoch``, with the same flags, without the
    data pipeline and the loss bookkeeping; the first step (and compilation) is timed apart. The
    steps are timed in ``repeat`` rounds and the fastest round counts (other processes on a
    shared machine only ever slow a round down).
    """
    tc = cfg.train
    set_seed(tc.seed)
    model = build_model(cfg.model).to(device)
    x = to_float(torch.from_numpy(batch_u8).to(device))  # (B, 1, S, S)
    if uses_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), tc, device)
    if tc.compile:
        model.compile()
    model.train()
    objective, gen = RunObjective(model, cfg).to(device), run_generator(tc.seed, 1, device)

    def step() -> None:
        train_step(objective, optimizer, x, x, generator=gen)

    first_s, _ = _timed(step, device)
    for _ in range(2):
        step()
    per_round = max(1, steps // repeat)
    secs = min(_timed(lambda: [step() for _ in range(per_round)], device)[0] for _ in range(repeat))
    return {"images_per_s": per_round * x.shape[0] / secs, "steps": per_round * repeat, "first_step_s": first_s}


def bench_train(images: np.ndarray, models: list[str], epochs: int, batch_size: int, device: torch.device,
                variants: list[str], work: Path, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    size = images.shape[-1]
    n_train = len(split_indices(len(images))["train"])
    steps = max(5, math.ceil(n_train / batch_size) * epochs)
    batch = images[:batch_size]
    out: dict[str, Any] = {"n_images": len(images), "n_train": n_train, "epochs": epochs,
                           "batch_size": batch_size}
    # Once per process, torch's first optimizer imports torch._dynamo (1-2 s on 2 cores): timed here, apart from
    # the fits, as it is in a study, whose runs share one process.
    out["first_optimizer_s"] = _timed(lambda: torch.optim.Adam([torch.zeros(1, requires_grad=True)]), device)[0]
    for name in models:
        cfg = _run_config(name, size, epochs, batch_size, device)
        fits = []  # like the bound: ``repeat`` rounds, the fastest counts (other processes only slow one down)
        for _ in range(repeat):
            run_dir = Path(tempfile.mkdtemp(prefix=f"fit-{name}-", dir=work))
            try:  # as the grid calls it: no last.pt after the last epoch (it deletes it once the run is evaluated)
                fits.append(_timed(lambda: fit(cfg, images, run_dir, log=lambda *_: None, final_checkpoint=False),
                                   device))
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
        fit_s, res = min(fits, key=lambda f: f[0])
        epoch_s = [row["seconds"] for row in res["history"]]  # train + validation of each epoch
        bound = compute_bound(cfg, batch, steps, device, repeat)
        r: dict[str, Any] = {
            "fit_s": fit_s, "fit_rounds_s": [f[0] for f in fits], "fit_images_per_s": n_train * epochs / fit_s,
            "epoch_seconds": epoch_s, "outside_epochs_s": fit_s - sum(epoch_s),
            "compute_bound_images_per_s": bound["images_per_s"], "compute_bound_steps": bound["steps"],
            "ratio_fit_over_bound": (n_train * epochs / fit_s) / bound["images_per_s"]}
        if epochs >= 2:  # epochs after the first, train + validation only (no setup, no checkpoints)
            r["steady_epochs_images_per_s"] = n_train * (epochs - 1) / sum(epoch_s[1:])
            r["fastest_epoch_images_per_s"] = n_train / min(epoch_s[1:])
        r["fast_paths"] = {}
        for v in variants:
            if v in ("channels_last", "no_channels_last") and name != "ae":
                continue  # a fully-connected model has no layout to change
            flag = {"no_fused_adam": {"fused_adam": False},
                    "no_channels_last": {"channels_last": False}}.get(v, {v: True})
            vb = compute_bound(_run_config(name, size, epochs, batch_size, device, **flag), batch, steps, device,
                               repeat)
            r["fast_paths"][v] = {"compute_bound_images_per_s": vb["images_per_s"],
                                  "speedup_over_plain_bound": vb["images_per_s"] / bound["images_per_s"],
                                  "first_step_s": vb["first_step_s"]}
        out[name] = r
        log(f"train {name}: fit {r['fit_images_per_s']:.0f} img/s, bound {bound['images_per_s']:.0f} img/s")
    return out


# ----------------------------------------------------------------------------- stacked runs
def memory_bandwidth(device: torch.device, mib: int = 256, repeat: int = 3) -> dict[str, Any]:
    """Bytes/s of a large copy (read + write): numpy on a CPU, a device-to-device copy on CUDA."""
    n = mib * 2**20
    if device.type == "cuda":
        src, dst = torch.empty(n, dtype=torch.uint8, device=device), torch.empty(n, dtype=torch.uint8, device=device)
        secs = min(_timed(lambda: dst.copy_(src), device)[0] for _ in range(repeat + 1))
        how = f"torch device-to-device copy of {mib} MiB ({torch.cuda.get_device_name(device)})"
    else:
        src, dst = np.ones(n, np.uint8), np.empty(n, np.uint8)
        secs = min(_timed(lambda: np.copyto(dst, src), device)[0] for _ in range(repeat + 1))
        how = f"numpy copy of {mib} MiB"
    return {"bytes_per_s": 2 * n / secs, "how": how + ", fastest of rounds; bytes read + written"}


def activation_elements(model: torch.nn.Module, image_size: int) -> int:
    """Elements of the input and of every layer's output for one image (a forward's activations)."""
    sizes = [image_size * image_size]
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel()))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, image_size, image_size, device=next(model.parameters()).device))
    for h in hooks:
        h.remove()
    return sum(sizes)


def traffic(model: torch.nn.Module, image_size: int, batch_size: int, bandwidth: float) -> dict[str, Any]:
    """Estimated bytes one training image moves, and the images/s the bandwidth allows.

    Per step and run, with P float32 parameters: the forward and the backward read the weights
    (4P + 4P), the backward writes the gradient (4P), Adam reads weight, gradient and two moments
    and writes weight and moments (16P + 12P): 40P bytes, shared by the batch. Per image, each
    activation is written by the forward and read by the backward, and its gradient written and
    read: 16 bytes per activation element. A lower bound on the traffic (caches ignored).
    """
    p, a = count_parameters(model), activation_elements(model, image_size)
    per_image = 40 * p / batch_size + 16 * a
    bound = bandwidth / per_image
    return {"parameters": p, "activation_elements_per_image": a, "bytes_per_image": per_image,
            "bound_images_per_s": bound,
            "arithmetic": f"40 B x {p:,} parameters / {batch_size} images + 16 B x {a:,} activations = "
                          f"{per_image:,.0f} B per image; {bandwidth / 1e9:,.1f} GB/s / {per_image:,.0f} B = "
                          f"{bound:,.0f} images/s"}


def bench_stacked(images: np.ndarray, models: list[str], gs: list[int], epochs: int, batch_size: int,
                  device: torch.device, compile_step: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Images/s of G runs trained as one stacked model vs one run at a time, over whole epochs."""
    size = images.shape[-1]
    train_u8 = torch.from_numpy(np.ascontiguousarray(images[split_indices(len(images))["train"]])).to(device)
    n = train_u8.shape[0]
    bw = memory_bandwidth(device)
    out: dict[str, Any] = {"n_train": n, "epochs": epochs, "batch_size": batch_size, "gs": gs,
                           "compile_step": compile_step, "bandwidth": bw, "models": {}}
    for name in models:
        base = _run_config(name, size, epochs, batch_size, device)
        cfgs = [replace(base, reg=RegConfig(kind=KINDS[g % len(KINDS)]),  # the grid's mix of runs
                        train=replace(base.train, seed=g, noise_train=0.1 if g % 2 else 0.0)) for g in range(max(gs))]
        one_s, t = _time_epochs(cfgs[:1], train_u8, epochs, device, False, stacked=False)
        one = n * epochs / one_s
        t = traffic(t, size, batch_size, bw["bytes_per_s"])
        r: dict[str, Any] = {"one_at_a_time_images_per_s": one, "traffic": t,
                             "one_at_a_time_ratio_to_bound": one / t["bound_images_per_s"], "stacked": {}}
        for g in gs:
            secs, _ = _time_epochs(cfgs[:g], train_u8, epochs, device, compile_step, stacked=True)
            ips = g * n * epochs / secs
            r["stacked"][str(g)] = {"images_per_s": ips, "seconds": secs, "speedup_over_one_at_a_time": ips / one,
                                    "ratio_to_bound": ips / t["bound_images_per_s"]}
            log(f"stacked {name}, G={g}: {ips:.0f} img/s ({ips / one:.2f}x one at a time, {one:.0f} img/s)")
        out["models"][name] = r
    return out


def _time_epochs(cfgs: list[RunConfig], train_u8: torch.Tensor, epochs: int, device: torch.device,
                 compile_step: bool, stacked: bool) -> tuple[float, torch.nn.Module]:
    """Seconds of ``epochs`` epochs of ``cfgs`` (as one stack, or the one run by ``train_one_epoch``),
    after one warm-up step; returns them and the first run's model."""
    models = []
    for c in cfgs:
        set_seed(c.train.seed)
        models.append(build_model(c.model).to(device))
    bs = cfgs[0].train.batch_size
    if stacked:
        stack = Stack(models, cfgs)
        if compile_step:
            stack.compile()
        opt = make_optimizer(stack.params.values(), cfgs[0].train, device)
        epoch = lambda e, data=train_u8: train_stack_epoch(stack, opt, data, cfgs, e)  # noqa: E731
    else:
        opt = make_optimizer(models[0].parameters(), cfgs[0].train, device)
        epoch = lambda e, data=train_u8: train_one_epoch(models[0], opt, data, cfgs[0], e)  # noqa: E731
    epoch(0, train_u8[:bs])  # warm-up (and compilation): one step
    return _timed(lambda: [epoch(e) for e in range(1, epochs + 1)], device)[0], models[0]


# ----------------------------------------------------------------------------- evaluation
def bench_eval(images: np.ndarray, device: torch.device, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Batched SSIM / PSNR of src.metrics vs scikit-image's per-image loop, same pairs; fastest of ``repeat``."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    n = len(images)
    x = to_float(torch.from_numpy(images))  # (N, 1, S, S) clean
    gen = torch.Generator().manual_seed(0)
    y = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp_(0, 1)  # a "reconstruction"
    a64, b64 = x[:, 0].double().numpy(), y[:, 0].double().numpy()  # skimage's inputs, prepared untimed
    xd, yd = x.to(device), y.to(device)

    def ours(fn):
        return torch.cat([fn(yd[s:s + EVAL_BATCH], xd[s:s + EVAL_BATCH]) for s in range(0, n, EVAL_BATCH)])

    res: dict[str, Any] = {"n_images": n, "eval_batch": EVAL_BATCH, "repeat": repeat}
    for key, fn, ref in (("ssim", M.ssim, lambda i: structural_similarity(a64[i], b64[i], data_range=1.0)),
                         ("psnr", M.psnr, lambda i: peak_signal_noise_ratio(a64[i], b64[i], data_range=1.0))):
        ours(fn)  # warm-up
        t_ours, v_ours = min((_timed(lambda: ours(fn), device) for _ in range(repeat)), key=lambda tv: tv[0])
        t_ref, v_ref = min((_timed(lambda: np.array([ref(i) for i in range(n)]), device) for _ in range(repeat)),
                           key=lambda tv: tv[0])
        res[key] = {"project_images_per_s": n / t_ours, "skimage_images_per_s": n / t_ref,
                    "ratio": t_ref / t_ours, "max_abs_diff": float(np.max(np.abs(v_ours.cpu().numpy() - v_ref)))}
        log(f"eval {key}: {n / t_ours:.0f} img/s vs skimage {n / t_ref:.0f} img/s")
    return res


# ----------------------------------------------------------------------------- memory, targets, table
def peak_memory(device: torch.device) -> dict[str, Any]:
    kib = 1024 if sys.platform == "darwin" else 1  # ru_maxrss: bytes on macOS, KiB on Linux
    mem = {"rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib / 1024,
           "rss_children_max_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib / 1024}
    mem["cuda_max_allocated_mib"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                     if device.type == "cuda" else None)
    return mem


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of issues #6 and #22 with what this run measured (``met`` None = not measured here)."""
    rows = []

    def add(what: str, value: float | None, target: str, ok: bool | None, note: str = "") -> None:
        rows.append({"what": what, "value": value, "target": target, "met": ok, "note": note})

    d, tr, ev = r.get("data"), r.get("train"), r.get("eval")
    for name in ("ae", "vae"):
        if tr and name in tr:
            v = tr[name]["ratio_fit_over_bound"]
            add(f"fit / compute bound, {name} ({r['device']})", v, ">= 0.8 (issue #22)", v >= 0.8,
                f"torch's first optimizer in a process: {tr['first_optimizer_s']:.2f} s more, once")
    if d:
        v = d["batches"]["ratio_project_over_naive"]
        add("project batches / naive PNG DataLoader", v, ">= 5", v >= 5)
        v = d["cold_decode_images_per_s"]
        add(f"cold decode, images/s ({d['n_files']} files, {d['workers']} workers)", v,
            ">= 1500 at 2,000+ files, 2 workers (issue #22)", v >= 1500 if d["n_files"] >= 2000 else None,
            "" if d["n_files"] >= 2000 else "needs 2,000+ files")
        v = d["cached_reload_s"]
        add(f"cached reload, s ({d['n_files']} files)", v, "<= 3 (at 70,000)", v <= 3,
            "" if d["n_files"] >= 70000 else "measured at a smaller N")
    if ev:
        v = ev["ssim"]["ratio"]
        add("batched SSIM / skimage loop", v, ">= 2 (issue #22; #6 asked 20)", v >= 2)
        v = ev["ssim"]["max_abs_diff"]
        add("SSIM max |diff| vs skimage", v, "<= 1e-5", v <= 1e-5)
    st = r.get("stacked")
    for name, m in (st or {}).get("models", {}).items():
        best = max(v["images_per_s"] for v in m["stacked"].values())
        big_gpu = r["device"].startswith("cuda") and any(k in r["machine"]["device_name"] for k in ("H100", "H200"))
        add(f"stacked training, best images/s over G, {name} (issue #13)", best, ">= 250,000 on one H100 or H200",
            best >= 250_000 if big_gpu else None, "" if big_gpu else "only an H100 or H200 can meet or miss it")
        several = [v["speedup_over_one_at_a_time"] for g, v in m["stacked"].items() if int(g) > 1]
        if r["device"] == "cpu" and several:
            add(f"stacked / one at a time on the CPU, worst G > 1, {name} (issue #13)", min(several),
                ">= 1 (not slower)", min(several) >= 1)
    add("full study on one H100, min", None, "<= 10", None, "not measured by this script (needs a GPU)")
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e5 else f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['machine']['device_name']} ({r['machine']['usable_cores']} cores, "
             f"ISA {' '.join(r['machine'].get('isa') or ['-'])}, torch kernels "
             f"{r['machine'].get('torch_cpu_capability')}, torch {r['machine']['torch']}, "
             f"{r['machine']['torch_threads']} threads"
             + "".join(f", {k}={v}" for k, v in r["machine"].get("env", {}).items()) + "), load "
             f"{r['machine']['loadavg_start'][0]:.2f} -> "
             f"{r['machine']['loadavg_end'][0]:.2f}, CPU time stolen by the host "
             + (f"{r['machine']['steal_share']:.1%}" if r["machine"].get("steal_share") is not None else "unknown")
             + f", {r['machine']['date']}", ""]
    rows = [("measure", "value")]
    d = r.get("data")
    if d:
        rows += [(f"cold decode of {d['n_files']} PNG files, images/s", d["cold_decode_images_per_s"]),
                 ("cached reload, s", d["cached_reload_s"]),
                 ("naive PNG DataLoader, images/s", d["batches"]["naive_dataloader_images_per_s"]),
                 ("project batches (resident uint8), images/s", d["batches"]["project_images_per_s"]),
                 ("  ratio project / naive", d["batches"]["ratio_project_over_naive"])]
    tr = r.get("train") or {}
    for name in ("ae", "vae"):
        if name in tr:
            t = tr[name]
            rows += [(f"{name}: fit, images/s ({tr['n_train']} train images x {tr['epochs']} epochs)",
                      t["fit_images_per_s"]),
                     (f"{name}: compute bound, images/s", t["compute_bound_images_per_s"]),
                     (f"{name}:   ratio fit / bound", t["ratio_fit_over_bound"])]
            if "steady_epochs_images_per_s" in t:
                rows.append((f"{name}:   epochs 2+ (train + val only), images/s", t["steady_epochs_images_per_s"]))
                rows.append((f"{name}:   fastest of those epochs, images/s", t["fastest_epoch_images_per_s"]))
            rows.append((f"{name}:   time outside epochs (setup, checkpoints), s", t["outside_epochs_s"]))
            if name == "ae" or "ae" not in tr:
                rows.append(("torch's first optimizer in the process (imports torch._dynamo), s, once",
                             tr["first_optimizer_s"]))
            for v, fp in t["fast_paths"].items():
                rows.append((f"{name}: bound with {v}, x plain bound", fp["speedup_over_plain_bound"]))
    st = r.get("stacked")
    if st:
        rows.append((f"memory bandwidth, GB/s ({st['bandwidth']['how'].split(',')[0]})",
                     st["bandwidth"]["bytes_per_s"] / 1e9))
        for name, m in st["models"].items():
            rows.append((f"{name}: one run at a time, images/s ({st['n_train']} images x {st['epochs']} epochs)",
                         m["one_at_a_time_images_per_s"]))
            for g, v in m["stacked"].items():
                rows.append((f"{name}:   stacked G={g}, images/s (x one at a time)",
                             f"{_fmt(v['images_per_s'])} ({v['speedup_over_one_at_a_time']:.2f}x)"))
            rows.append((f"{name}:   bandwidth bound, images/s; {m['traffic']['arithmetic'].split(';')[0]}",
                         m["traffic"]["bound_images_per_s"]))
    ev = r.get("eval")
    if ev:
        for k in ("ssim", "psnr"):
            rows += [(f"{k}: project batched, images/s", ev[k]["project_images_per_s"]),
                     (f"{k}: skimage per image, images/s", ev[k]["skimage_images_per_s"]),
                     (f"{k}:   ratio / max |diff|", f"{_fmt(ev[k]['ratio'])} / {ev[k]['max_abs_diff']:.2g}")]
    mem = r["memory"]
    rows.append(("peak RSS self / children, MiB", f"{mem['rss_self_mib']:.0f} / {mem['rss_children_max_mib']:.0f}"))
    if mem["cuda_max_allocated_mib"] is not None:
        rows.append(("CUDA max allocated, MiB", mem["cuda_max_allocated_mib"]))
    w = max(len(a) for a, _ in rows)
    lines += [f"{a:<{w}}  {_fmt(b)}" for a, b in rows]
    lines += ["", "targets (issues #6, #22):"]
    for t in r["targets"]:
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"  {t['what']}: {_fmt(t['value'])} (target {t['target']}) {met}"
                     + (f" [{t['note']}]" if t["note"] else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
from src.__main__ import Parser, positive_int as _pos_int  # noqa: E402  (the project's one-line-error parser)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=_pos_int, default=2000, help="generated PNG files decoded and trained on")
    p.add_argument("--epochs", type=_pos_int, default=3, help="epochs of each fit (and of the compute bound)")
    p.add_argument("--eval-n", type=_pos_int, default=None, help="image pairs scored (default: min(N, 2000))")
    p.add_argument("--batch-size", type=_pos_int, default=128, help="training batch size")
    p.add_argument("--image-size", type=_pos_int, default=128, help="side of the generated faces, pixels")
    p.add_argument("--batch-epochs", type=_pos_int, default=1, help="epochs of the naive-vs-project batch test")
    p.add_argument("--models", nargs="+", choices=("ae", "vae"), default=["ae", "vae"], help="models to train")
    p.add_argument("--variants", nargs="*", choices=VARIANTS, default=["amp", "no_channels_last", "no_fused_adam"],
                   help="fast paths measured on the compute bound (compile: slow to compile on a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--workers", type=_pos_int, default=None,
                   help="decode and DataLoader worker processes; 1 = in this process (default: all cores)")
    p.add_argument("--repeat", type=_pos_int, default=3,
                   help="rounds of the bound, batch and metric measurements; the fastest counts")
    p.add_argument("--threads", type=_pos_int, default=None,
                   help="torch intra-op threads (default: torch's choice, one per core)")
    p.add_argument("--stacked-g", type=_pos_int, nargs="+", default=None, metavar="G",
                   help="runs trained as one stacked model (default: 1 8 16 48 on CUDA, 1 2 elsewhere)")
    p.add_argument("--stacked-epochs", type=_pos_int, default=1, help="epochs timed per stacked measurement")
    p.add_argument("--stacked-compile", action="store_true",
                   help="torch.compile(mode='reduce-overhead') the stacked step (CUDA only; opt-in, unmeasured here)")
    p.add_argument("--skip", nargs="*", choices=("train", "stacked", "eval"), default=[],
                   help="sections not to run")
    p.add_argument("--work", default=str(DEFAULT_WORK), help="folder for generated files (kept) and temp runs")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    return p


def run(args: argparse.Namespace, command: str = "", log: Callable[[str], None] = print) -> dict[str, Any]:
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the work folder {work} ({e.strerror or e}); pass another --work") from None
    workers = args.workers or cpu_workers()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_start, times_start = time.perf_counter(), cpu_times()
    r: dict[str, Any] = {"machine": machine_info(device), "device": str(device),
                         "args": dict(vars(args)), "command": command}
    if args.image_size % 4 or args.image_size < 8:
        raise UserError(f"--image-size must be a multiple of 4 and >= 8 (the AE halves it twice), "
                        f"got {args.image_size}")
    if args.stacked_compile and device.type != "cuda" and "stacked" not in args.skip:
        raise UserError("--stacked-compile is for CUDA (CUDA graphs); on this device leave it off")
    r["data"], images = bench_data(args.n, args.image_size, work, device, args.batch_size, workers,
                                   args.batch_epochs, args.repeat, log)
    if "train" not in args.skip:
        r["train"] = bench_train(images, args.models, args.epochs, args.batch_size, device, args.variants, work,
                                 args.repeat, log)
    if "stacked" not in args.skip:
        gs = args.stacked_g or ([1, 8, 16, 48] if device.type == "cuda" else [1, 2])
        r["stacked"] = bench_stacked(images, args.models, sorted(set(gs)), args.stacked_epochs, args.batch_size,
                                     device, args.stacked_compile, log)
    if "eval" not in args.skip:
        r["eval"] = bench_eval(images[:args.eval_n or min(args.n, 2000)], device, args.repeat, log)
    r["memory"] = peak_memory(device)
    r["targets"] = targets(r)
    r["machine"]["loadavg_end"] = list(os.getloadavg())
    r["machine"]["steal_share"] = steal_share(times_start, cpu_times())
    r["total_s"] = time.perf_counter() - t_start
    return r


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        r = run(args, command=" ".join(["python -m benchmarks.run", *argv]))
        out = Path(args.out)
        try:
            write_json(out, r)
        except OSError as e:
            raise UserError(f"cannot write {out} ({e.strerror or e}); pass another --out") from None
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(table(r))
    print(f"\n{r['total_s']:.0f} s in all; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
