"""Input corruptions on images in [0, 1]. The target of every loss stays the clean image.

Noise is drawn on the generator's device and then moved to the images' device. Evaluation
uses ``eval_generator``: a CPU generator keyed by (seed, condition name), so every model, on
every device (CPU, CUDA, MPS), is scored on the very same noisy images, and figures redrawn
later on a CPU show exactly the images whose metrics the captions print.
"""
from __future__ import annotations

import zlib

import torch


def eval_generator(seed: int, condition: str) -> torch.Generator:
    """CPU generator of the evaluation noise of ``condition`` (e.g. "gaussian_0.1") for ``seed``.

    Keyed by the condition's name, not its position in a list, so adding a condition never
    changes the noise of another. CPU on purpose: torch's CUDA and CPU generators give
    different numbers for the same seed.
    """
    return torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + zlib.crc32(condition.encode()))


def _draw(fn, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``fn(shape)`` on the generator's device (x's without one), returned on x's device."""
    dev = generator.device if generator is not None else x.device
    return fn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, sigma^2) per pixel, clamped to [0, 1]."""
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    noise = _draw(torch.randn, x, generator)
    return (x + sigma * noise).clamp_(0.0, 1.0)


def salt_and_pepper(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set a fraction ``p`` of pixels (in expectation) to 0 or 1 with equal odds."""
    if not 0 <= p <= 1:
        raise ValueError(f"salt-and-pepper fraction must be in [0, 1], got {p}")
    u = _draw(torch.rand, x, generator)
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
