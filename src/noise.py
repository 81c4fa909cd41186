"""Input corruptions on images in [0, 1]. The target of every loss stays the clean image.

Pass a seeded ``torch.Generator`` (on the images' device) to get the same noise for
every model, which is how evaluation keeps noisy test images identical across runs.
"""
from __future__ import annotations

import torch


def gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, sigma^2) per pixel, clamped to [0, 1]."""
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp_(0.0, 1.0)


def salt_and_pepper(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set a fraction ``p`` of pixels (in expectation) to 0 or 1 with equal odds."""
    if not 0 <= p <= 1:
        raise ValueError(f"salt-and-pepper fraction must be in [0, 1], got {p}")
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    out = x.clone()
    out[u < p / 2] = 0.0
    out[(u >= p / 2) & (u < p)] = 1.0
    return out


CORRUPTIONS = {"gaussian": gaussian, "s&p": salt_and_pepper}


def corrupt(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply corruption ``kind`` ("clean", "gaussian" or "s&p") at ``level``."""
    if kind == "clean" or level == 0:
        return x
    return CORRUPTIONS[kind](x, level, generator)


def condition_name(kind: str, level: float) -> str:
    """Key used in metrics files: "clean", "gaussian_0.1", "s&p_0.05"."""
    return "clean" if kind == "clean" or level == 0 else f"{kind}_{level:g}"
