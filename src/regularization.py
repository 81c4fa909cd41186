"""Explicit weight penalties, the same mechanism for both models.

penalty = l1 * sum|w| + l2 * sum w^2 over the selected parameters, added to the loss.
By default every weight tensor (conv kernels, linear matrices) of the whole model is
penalized and **biases are not** (penalizing offsets does not limit capacity).
``scope="decoder"`` reproduces the original VAE notebook's decoder-only penalty.

Differences from the original study: it used Adam ``weight_decay`` for the AE's L2
(a gradient-side decay that Adam rescales, so not the same objective) and a
decoder-only penalty for the VAE; here both models get the same explicit penalty.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import RegConfig

def penalized_parameters(model: nn.Module, cfg: RegConfig) -> list[torch.Tensor]:
    params = []
    for name, p in model.named_parameters():
        if not cfg.include_bias and name.endswith("bias"):
            continue
        is_decoder = name.startswith("decoder.")
        if (cfg.scope == "decoder" and not is_decoder) or (cfg.scope == "encoder" and is_decoder):
            continue
        params.append(p)
    return params


def penalty(model: nn.Module, cfg: RegConfig) -> torch.Tensor:
    """Scalar tensor l1 * sum|w| + l2 * sum w^2 (zero for ``kind="none"``)."""
    lam1, lam2 = cfg.lambdas
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    if lam1 == 0 and lam2 == 0:
        return total
    for p in penalized_parameters(model, cfg):
        if lam1:
            total = total + lam1 * p.abs().sum()
        if lam2:
            total = total + lam2 * p.pow(2).sum()
    return total
