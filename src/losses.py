"""Training objectives, kept outside the models. Each returns a dict with ``loss``.

- AE: ``recon`` = mean squared error over pixels and batch (as ``nn.MSELoss``).
- VAE: ``recon`` + beta * ``kl``, each **summed over pixels / latent dims per image,
  then averaged over the batch**. Averaging over pixels instead would shrink the
  reconstruction term by 16,384x against the KL term and collapse the posterior.
  ``recon`` is binary cross-entropy (the Bernoulli decoder of Kingma & Welling) by
  default, or the summed squared error with ``recon="mse"``.

The weight penalty (``regularization.add_penalty_grad``) is added by the training step, which
reports it as ``penalty``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ae_loss(out: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
    recon = F.mse_loss(out["x_hat"], target)
    return {"loss": recon, "recon": recon}


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims: (B, L) -> (B,)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def vae_loss(out: dict[str, torch.Tensor], target: torch.Tensor, beta: float = 1.0,
             recon: str = "bce") -> dict[str, torch.Tensor]:
    x_hat = out["x_hat"]
    if recon == "bce":
        # F.binary_cross_entropy's formula (logs clamped at -100), written out so that a
        # diverged (NaN) output yields a NaN loss the training loop reports, not an exception.
        per_pixel = -(target * torch.log(x_hat).clamp_min(-100)
                      + (1 - target) * torch.log1p(-x_hat).clamp_min(-100))
    elif recon == "mse":
        per_pixel = (x_hat - target) ** 2
    else:
        raise ValueError(f"unknown VAE reconstruction loss {recon!r}")
    rec = per_pixel.flatten(1).sum(1).mean()  # summed per image, mean over batch
    kl = kl_divergence(out["mu"], out["logvar"]).mean()
    return {"loss": rec + beta * kl, "recon": rec, "kl": kl}


def compute_loss(model_name: str, out: dict[str, torch.Tensor], target: torch.Tensor,
                 beta: float = 1.0, vae_recon: str = "bce") -> dict[str, torch.Tensor]:
    if model_name == "ae":
        return ae_loss(out, target)
    return vae_loss(out, target, beta=beta, recon=vae_recon)
