"""The two compressors of the study: a small convolutional AE and a fully-connected VAE.

Both take images ``(B, C, S, S)`` in [0, 1], expose ``latent_shape`` (one image's latent) and
return dicts (CompressAI style) from ``forward(x, generator=None)``:

- ``ConvAE.forward(x) -> {"x_hat", "z"}``; it draws nothing, so it ignores ``generator``.
- ``LinearVAE.forward(x, generator) -> {"x_hat", "mu", "logvar", "z"}``.

``LinearVAE`` samples ``z = mu + sigma * eps`` only in training mode, with ``eps`` drawn from
``generator`` (a run's own generator, so a run draws the same eps alone or stacked with others)
or passed in as ``eps=`` (the stacked trainer draws it outside ``vmap``, which cannot use
generators). In eval mode ``z = mu`` (the posterior mean), so every reported reconstruction
metric is that of ``decode(mu)``. The original notebooks evaluated a *sampled* z; ``forward(x,
sample=True)`` reproduces that for comparison.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class ConvAE(nn.Module):
    """Conv(1→8, s2) → Conv(8→4, s2) | ConvT(4→8, s2) → ConvT(8→1, s2) + sigmoid."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, h, k = cfg.channels, cfg.ae_hidden, cfg.ae_latent
        self.latent_shape = (k, cfg.image_size // 4, cfg.image_size // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, h, 3, stride=2, padding=1), nn.ReLU(),  # (B, h, S/2, S/2)
            nn.Conv2d(h, k, 3, stride=2, padding=1), nn.ReLU(),  # (B, k, S/4, S/4)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(k, h, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # (B, h, S/2, S/2)
            nn.ConvTranspose2d(h, c, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid(),  # (B, c, S, S)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        return {"x_hat": self.decode(z), "z": z}


class LinearVAE(nn.Module):
    """Flatten → Linear(D→512) + ReLU → (mu, logvar) heads 512→200 | 200→512 + ReLU → 512→D + sigmoid."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.image_shape = (cfg.channels, cfg.image_size, cfg.image_size)
        d = cfg.channels * cfg.image_size * cfg.image_size  # 16384 for 1x128x128
        self.latent_shape = (cfg.vae_latent,)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, cfg.vae_hidden), nn.ReLU())
        self.fc_mu = nn.Linear(cfg.vae_hidden, cfg.vae_latent)
        self.fc_logvar = nn.Linear(cfg.vae_hidden, cfg.vae_latent)
        self.decoder = nn.Sequential(
            nn.Linear(cfg.vae_latent, cfg.vae_hidden), nn.ReLU(),
            nn.Linear(cfg.vae_hidden, d), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) -> mu, logvar, each (B, latent)."""
        h = self.encoder(x)  # (B, hidden)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> (B, C, S, S)."""
        return self.decoder(z).view(-1, *self.image_shape)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                eps: torch.Tensor | None = None, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """Sample z in training mode (or when ``sample=True``); use z = mu otherwise.

        Args:
            generator: where eps ~ N(0, I) is drawn from (default: torch's global generator).
            eps: (B, latent) draw to use instead; given, z is sampled with it in any mode.
        """
        mu, logvar = self.encode(x)  # (B, latent) each
        if eps is None and (self.training if sample is None else sample):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)  # reparameterization trick
        return {"x_hat": self.decode(z), "mu": mu, "logvar": logvar, "z": z}

    @torch.no_grad()
    def sample(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` draws from the prior N(0, I): (n, C, S, S)."""
        z = torch.randn(n, *self.latent_shape, device=device, generator=generator)
        return self.decode(z)


MODELS: dict[str, type[nn.Module]] = {"ae": ConvAE, "vae": LinearVAE}


def build_model(cfg: ModelConfig) -> nn.Module:
    return MODELS[cfg.name](cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
