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

import torch

WIN = 7
K1, K2 = 0.01, 0.03
# Images per step on the CPU, so that the temporaries stay in cache (several times faster than
# whole-batch steps on 2 cores; neighbouring sizes measured within ~15%). Other devices take the whole batch.
CPU_CHUNK = 16  # mse, psnr
SSIM_CPU_CHUNK = 4  # ssim


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


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, ...) x (B, ...) -> (B,) mean squared error per image."""
    return _chunked(_squared_error, x, y, CPU_CHUNK).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B,) peak signal-to-noise ratio in dB."""
    err = _chunked(_squared_error, x, y, CPU_CHUNK)
    return (10 * torch.log10(data_range**2 / err)).float()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) pairs -> (B,) SSIM, equal to skimage's to ~1e-6.

    Computed in float32 on mean-centred images, with separable window sums.
    """
    if x.dim() == 3:
        x, y = x.unsqueeze(1), y.unsqueeze(1)
    if x.shape[1] != 1:
        raise ValueError(f"ssim expects single-channel images, got shape {tuple(x.shape)}")
    return _chunked(lambda a, b: _ssim(a, b, data_range), x, y, SSIM_CPU_CHUNK)


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


def _ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """SSIM of (b, 1, H, W) pairs in float32."""
    x, y = x.float(), y.float()
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    # (Co)variances do not change when an image is shifted, and they are differences of close
    # numbers: centering each image on its mean first keeps float32 within ~1e-7 of float64.
    mx, my = x.mean((1, 2, 3), keepdim=True), y.mean((1, 2, 3), keepdim=True)  # (b, 1, 1, 1)
    xc, yc = x - mx, y - my
    maps = torch.cat([xc, yc, xc * xc + yc * yc, xc * yc], 1)  # (b, 4, H, W)
    means = _window_sum(_window_sum(maps, WIN, 3), WIN, 2).div_(WIN * WIN)  # (b, 4, H-6, W-6)
    ux, uy, sq, xy = means.unbind(1)  # window means of the centered images, (b, H-6, W-6)
    cov_norm = WIN * WIN / (WIN * WIN - 1)  # sample covariance, as skimage
    v_sum = cov_norm * (sq - ux * ux - uy * uy)  # var x + var y
    cov = cov_norm * (xy - ux * uy)
    ux, uy = ux + mx[:, 0], uy + my[:, 0]  # back to the images' own means
    s = ((2 * ux * uy + c1) * (2 * cov + c2)) / ((ux * ux + uy * uy + c1) * (v_sum + c2))
    return s.flatten(1).mean(1)


def all_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"mse", "psnr", "ssim"}, each (B,) float32."""
    return {"mse": mse(x_hat, x), "psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
