"""Per-image MSE, PSNR and SSIM, batched in torch (CPU or GPU), images in [0, 1].

Definitions equal scikit-image's with ``data_range=1.0``:

- PSNR = 10 log10(1 / MSE) dB (inf for a perfect reconstruction);
- SSIM = ``skimage.metrics.structural_similarity(a, b, data_range=1.0)``: 7x7 uniform
  window, K1 = 0.01, K2 = 0.03, sample covariance (49/48), mean of the SSIM map over
  the interior cropped by 3 pixels. skimage filters the whole image and then crops the
  border, so a "valid" 7x7 window mean gives exactly the pixels it keeps.

Every function returns one value per image, shape (B,); datasets are summarized as
the mean of per-image values.
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

WIN = 7
K1, K2 = 0.01, 0.03
# Images per step on the CPU, so that the temporaries stay in cache (several times faster than
# whole-batch steps on 2 cores; neighbouring sizes measured within ~15%). Other devices take the whole batch.
CPU_CHUNK = 16  # mse, psnr
# SSIM on the CPU: tasks of SSIM_CPU_CHUNK images, one per core, each task on one intra-op thread. About 20
# small ops per task: split across threads, every op waits for the slowest core (benchmarks/RESULTS.md, 2026-12-01).
SSIM_CPU_CHUNK = 2


def _squared_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error: differences in (at least) float32, summed in float64 (float32 on MPS)."""
    d = (x.to(torch.promote_types(x.dtype, torch.float32)) - y).flatten(1)
    acc = torch.float32 if d.device.type == "mps" else torch.float64  # MPS has no float64
    return torch.linalg.vector_norm(d, dim=1, dtype=acc).square() / d.shape[1]


def _chunked(fn, x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn`` over chunks of ``chunk`` images on the CPU, over the whole batch elsewhere."""
    if x.device.type != "cpu" or x.shape[0] <= chunk:
        return fn(x, y)
    return torch.cat([fn(x[s:s + chunk], y[s:s + chunk]) for s in range(0, x.shape[0], chunk)])


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, workers, pool) of the SSIM tasks


def _cpu_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads with one intra-op thread each, made once per process and size.

    torch.set_num_threads in a new thread sets that thread's count and the default of threads not
    yet started; every worker is started here (the barrier holds each on its own thread) and this
    thread's count then set back, so the rest of the process keeps its setting.
    """
    global _POOL
    if _POOL is None or _POOL[:2] != (os.getpid(), workers):  # a forked child has the object, not the threads
        mine = torch.get_num_threads()
        started = threading.Barrier(workers + 1)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="ssim", initializer=torch.set_num_threads,
                                  initargs=(1,))
        waits = [pool.submit(started.wait) for _ in range(workers)]
        started.wait()
        for w in waits:
            w.result()
        torch.set_num_threads(mine)
        old, _POOL = _POOL, (os.getpid(), workers, pool)
        if old is not None and old[0] == os.getpid():
            old[2].shutdown(wait=False)
    return _POOL[2]


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, ...) x (B, ...) -> (B,) mean squared error per image."""
    return _chunked(_squared_error, x, y, CPU_CHUNK).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B,) peak signal-to-noise ratio in dB."""
    err = _chunked(_squared_error, x, y, CPU_CHUNK)
    return (10 * torch.log10(data_range**2 / err)).float()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) pairs -> (B,) SSIM, equal to skimage's to ~2e-6.

    Computed in float32 on mean-centred images, with separable window sums. On the CPU, chunks
    of ``SSIM_CPU_CHUNK`` images are scored in parallel, one thread per torch intra-op thread.
    """
    if x.dim() == 3:
        x, y = x.unsqueeze(1), y.unsqueeze(1)
    if x.shape[1] != 1:
        raise ValueError(f"ssim expects single-channel images, got shape {tuple(x.shape)}")
    fn = lambda a, b: _ssim(a, b, data_range)  # noqa: E731
    workers, n, c = torch.get_num_threads(), x.shape[0], SSIM_CPU_CHUNK
    if x.device.type != "cpu" or workers == 1 or n <= c:
        return _chunked(fn, x, y, c)
    return torch.cat(list(_cpu_pool(workers).map(lambda s: fn(x[s:s + c], y[s:s + c]), range(0, n, c))))


def _window_sum(t: torch.Tensor, w: int, dim: int) -> torch.Tensor:
    """Sums of ``w`` consecutive entries along ``dim`` ("valid" positions: length n - w + 1).

    Binary doubling: sums of 1, 2, 4, ... entries, of which those in w's binary expansion are
    added (7 = 1 + 2 + 4: four additions instead of six, and vectorized, unlike avg_pool2d).
    """
    m = t.shape[dim] - w + 1
    out, offset, size, p = None, 0, 1, t  # p[i] = sum of t[i : i + size]
    while True:
        if w & size:
            part = p.narrow(dim, offset, m)
            out = part.clone() if out is None else out.add_(part)
            offset += size
        if size * 2 > w:
            return out
        n = p.shape[dim] - size
        p = p.narrow(dim, 0, n) + p.narrow(dim, size, n)
        size *= 2


@functools.lru_cache(maxsize=8)
def _band(n: int, w: int, device: torch.device) -> torch.Tensor:
    """(n, n - w + 1) float32 matrix of ones where row i is in window j (j <= i < j + w): t @ band = window sums."""
    i, j = torch.arange(n)[:, None], torch.arange(n - w + 1)[None, :]
    return ((i >= j) & (i < j + w)).float().to(device)


def _ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """SSIM of (b, 1, H, W) pairs in float32, in about 20 ops (each written into its own result)."""
    x, y = x.float(), y.float()
    b, _, h, w = x.shape
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    # (Co)variances do not change when an image is shifted, and they are differences of close
    # numbers: centering each image on its mean first keeps float32 within ~1e-6 of float64.
    mx, my = x.mean((1, 2, 3), keepdim=True), y.mean((1, 2, 3), keepdim=True)  # (b, 1, 1, 1)
    maps = x.new_empty(b, 4, h, w)  # xc, yc, xc^2 + yc^2, xc yc
    xc, yc = torch.sub(x, mx, out=maps[:, 0:1]), torch.sub(y, my, out=maps[:, 1:2])
    torch.mul(xc, xc, out=maps[:, 2:3]).addcmul_(yc, yc)
    torch.mul(xc, yc, out=maps[:, 3:4])
    # Window sums: along rows by shifted additions (whole rows, vectorized), along columns as one matrix
    # product with a band of ones (shifted additions there are unaligned and cost more).
    sums = torch.matmul(_window_sum(maps, WIN, 2), _band(w, WIN, x.device))  # (b, 4, H-6, W-6)
    sx, sy, sq, sxy = sums.unbind(1)
    n = WIN * WIN
    cn = 1 / (n * (n - 1))  # sample covariance (n / (n - 1), as skimage) of window sums: (n Sxy - Sx Sy) cn
    ux, uy = torch.add(mx[:, 0], sx, alpha=1 / n), torch.add(my[:, 0], sy, alpha=1 / n)  # the images' own means
    num1 = torch.mul(ux, uy).mul_(2).add_(c1)  # 2 ux uy + c1
    den1 = torch.mul(ux, ux).addcmul_(uy, uy).add_(c1)  # ux^2 + uy^2 + c1
    num2 = torch.mul(sxy, 2 * n * cn).add_(c2).addcmul_(sx, sy, value=-2 * cn)  # 2 cov + c2
    den2 = torch.mul(sq, n * cn).add_(c2).addcmul_(sx, sx, value=-cn).addcmul_(sy, sy, value=-cn)  # var x + var y + c2
    return num1.mul_(num2).div_(den1.mul_(den2)).mean((1, 2))


def all_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"mse", "psnr", "ssim"}, each (B,) float32."""
    return {"mse": mse(x_hat, x), "psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
