"""Per-image MSE, PSNR and SSIM, batched in torch (CPU or GPU), images in [0, 1].

Definitions equal scikit-image's with ``data_range=1.0``:

- PSNR = 10 log10(1 / MSE) dB (inf for a perfect reconstruction);
- SSIM = ``skimage.metrics.structural_similarity(a, b, data_range=1.0)``: 7x7 uniform
  window, K1 = 0.01, K2 = 0.03, sample covariance (49/48), mean of the SSIM map over
  the interior cropped by 3 pixels. skimage filters the whole image and then crops the
  border, so a "valid" 7x7 average pool gives exactly the pixels it keeps.

Every function returns one value per image, shape (B,); datasets are summarized as
the mean of per-image values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WIN = 7
K1, K2 = 0.01, 0.03


def _hi(x: torch.Tensor) -> torch.Tensor:
    """float64 for accumulation (float32 on Apple MPS, which has no float64)."""
    return x.to(torch.float32 if x.device.type == "mps" else torch.float64)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return _hi(x.reshape(x.shape[0], -1))


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, ...) x (B, ...) -> (B,) mean squared error per image."""
    return (_flat(x) - _flat(y)).pow(2).mean(1).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B,) peak signal-to-noise ratio in dB."""
    err = (_flat(x) - _flat(y)).pow(2).mean(1)
    return (10 * torch.log10(data_range**2 / err)).float()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) pairs -> (B,) SSIM, equal to skimage's to ~1e-6."""
    if x.dim() == 3:
        x, y = x.unsqueeze(1), y.unsqueeze(1)
    if x.shape[1] != 1:
        raise ValueError(f"ssim expects single-channel images, got shape {tuple(x.shape)}")
    x, y = _hi(x), _hi(y)  # the variances below are differences of close numbers
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    pool = lambda t: F.avg_pool2d(t, WIN, stride=1)  # noqa: E731  (B, 1, H-6, W-6)
    ux, uy = pool(x), pool(y)
    cov_norm = WIN * WIN / (WIN * WIN - 1)  # sample covariance, as skimage
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def all_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"mse", "psnr", "ssim"}, each (B,) float32."""
    return {"mse": mse(x_hat, x), "psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
