"""Profiles behind the benchmark's missed targets: where SSIM and ``fit`` spend their time.

    python -m benchmarks.profiling                    # both, default sizes (about a minute on 2 cores)
    python -m benchmarks.profiling --what ssim --n 512

Writes a text report (default ``benchmarks/out/profile.txt``) with:

- ssim: torch.profiler's operator table for ``src.metrics.ssim`` on N generated faces, and
  cProfile's top functions for scikit-image's per-image loop on the same pairs;
- fit: cProfile's top functions (by own time) of one ``src.train.fit`` call per model,
  which separates the training steps from validation, checkpoint serialization and writes.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository, not this folder, goes on the path
    _here = Path(__file__).resolve().parent  # (files here must not shadow modules such as the stdlib's)
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

import torch

from src import metrics as M
from src import synthetic
from src.data import to_float
from src.utils import write_text

HERE = Path(__file__).resolve().parent


def _cprofile(fn, top: int) -> tuple[float, str]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(fn)
    secs = time.perf_counter() - t0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    body = buf.getvalue()
    return secs, body[body.find("   ncalls"):].rstrip()


def profile_ssim(n: int, top: int) -> str:
    from skimage.metrics import structural_similarity

    faces = synthetic.generate(n, seed=5)
    x = to_float(torch.from_numpy(faces))  # (N, 1, 128, 128)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    a64, b64 = x[:, 0].double().numpy(), y[:, 0].double().numpy()
    M.ssim(y[:8], x[:8])  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        M.ssim(y, x)
        ours = time.perf_counter() - t0
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    ref, ref_table = _cprofile(lambda: [structural_similarity(a64[i], b64[i], data_range=1.0) for i in range(n)],
                               top)
    ops = sum(e.count for e in prof.key_averages())
    return "\n".join([
        f"## src.metrics.ssim on {n} faces, 128x128 (chunks of {M.SSIM_CPU_CHUNK}): {ours:.3f} s under the profiler "
        f"= {ours / n * 1e6:.0f} us/image; {ops} aten calls = {ops / n:.0f} per image", "", table, "",
        f"## skimage structural_similarity, per-image loop (float64): {ref:.3f} s under cProfile "
        f"= {ref / n * 1e6:.0f} us/image", "", ref_table, ""])


def profile_fit(n: int, epochs: int, top: int) -> str:
    from src.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from src.train import fit

    faces = synthetic.generate(n, seed=5)
    parts = []
    for name in ("ae", "vae"):
        for ckpt in (0.0, 60.0):
            cfg = RunConfig(model=ModelConfig(name=name),
                            train=TrainConfig(epochs=epochs, progress=False, device="cpu", checkpoint_s=ckpt),
                            data=DataConfig())
            run_dir = Path(tempfile.mkdtemp(prefix="profile-fit-"))
            try:
                secs, table = _cprofile(lambda: fit(cfg, faces, run_dir, log=lambda *_: None), top)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            parts += [f"## fit {name}, {n} images ({int(n * 0.7)} train) x {epochs} epochs, checkpoint_s={ckpt:g}: "
                      f"{secs:.2f} s under cProfile", "", table, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--what", nargs="+", choices=("ssim", "fit"), default=["ssim", "fit"], help="what to profile")
    p.add_argument("--n", type=int, default=512, help="images")
    p.add_argument("--epochs", type=int, default=3, help="epochs of each profiled fit")
    p.add_argument("--top", type=int, default=15, help="rows per table")
    p.add_argument("--out", default=str(HERE / "out" / "profile.txt"), help="text report")
    a = p.parse_args(argv)
    if a.n < 10 or a.epochs < 1 or a.top < 1:
        sys.stderr.write("error: --n must be >= 10, --epochs and --top >= 1\n")
        return 2
    import os

    head = (f"# profile, {time.strftime('%Y-%m-%d %H:%M:%S %z')}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}\n")
    body = [profile_ssim(a.n, a.top) if w == "ssim" else profile_fit(a.n, a.epochs, a.top) for w in a.what]
    text = head + "\n" + "\n".join(body)
    try:
        write_text(a.out, text)
    except OSError as e:
        sys.stderr.write(f"error: cannot write {a.out} ({e.strerror or e}); pass another --out\n")
        return 2
    print(text)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
