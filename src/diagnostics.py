"""VAE and AE diagnostics: KL rate per latent dimension, active units, ELBO terms, PCA-equivalent size.

Definitions (``docs/vae-diagnostics.md`` has them with their references):

- ``kl_per_dim``: KL_d = ½ (μ_d² + σ_d² − log σ_d² − 1) of q(z|x) = N(μ, σ²) against N(0, I),
  per image and dimension, in nats; its mean over images, summed over d, is the rate of
  Alemi et al. 2018 (``to_bits``: nats / ln 2).
- active units (Burda et al. 2016): dimensions whose posterior mean varies across images,
  Var_x(μ_d) > ``ACTIVE_THRESHOLD``; for the AE, feature-map entries (channel × position)
  whose value varies across images.
- the PCA-equivalent size: the number of PCA components (fitted on the training split) whose
  test PSNR equals the model's, interpolated linearly between measured k (``pca_equivalent_size``).

Everything is measured on images as they are (no noise), with z = μ (no sampling). The pure
functions take tensors or arrays; ``model_diagnostics`` runs a model over batches, and
``cached_pca_curve`` computes the PCA curve once per training / test split of a folder.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .pca import PCA
from .data import to_float
from .losses import vae_loss
from .metrics import psnr
from .results import PCA_CURVE_JSON, read_pca_curves
from .utils import write_json

VERSION = 1                                # bump when the stored quantities change (old ones are recomputed)
ACTIVE_THRESHOLD = 0.01                    # Var_x(mu_d) above this: an active unit (Burda et al. 2016)
THRESHOLDS = (1e-4, 1e-3, 1e-2, 1e-1)      # the counts stored besides the usual one
AE_THRESHOLDS = (0.0, 1e-4, 1e-3, 1e-2)    # 0.0: the entry varies at all across images
PCA_KS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 200, 256)  # k = 0: the mean image
LN2 = math.log(2.0)


# ---------------------------------------------------------------- pure quantities

def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_d, σ_d²) || N(0, 1)) per image and dimension, in nats: (B, L), (B, L) -> (B, L)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def to_bits(nats: float | np.ndarray | torch.Tensor):
    """Nats -> bits (÷ ln 2)."""
    return nats / LN2


def counts_above(variance: np.ndarray, thresholds: Sequence[float]) -> dict[str, int]:
    """{f"{t:g}": number of entries with variance > t} for each threshold t."""
    v = np.asarray(variance)
    return {f"{t:g}": int((v > t).sum()) for t in thresholds}


def active_units(variance: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of latent dimensions with Var_x(μ_d) > ``threshold``; variance: (L,)."""
    return int((np.asarray(variance) > threshold).sum())


def pca_equivalent_size(ks: Sequence[float], psnrs: Sequence[float], target: float) -> dict[str, Any]:
    """The k at which PCA's test PSNR curve reaches ``target`` dB, linear between measured k.

    Args:
        ks: measured numbers of components, increasing (k = 0 is the mean image).
        psnrs: PCA-k's mean test PSNR (dB) at each k.

    Returns:
        {"k": float or None, "bound": None | "below" | "above", "target_psnr"}: "below" (k = the
        first k) when even the first point reaches ``target``; "above" (k None) when the last does not.
    """
    ks, ps = [float(k) for k in ks], [float(p) for p in psnrs]
    out: dict[str, Any] = {"k": None, "bound": None, "target_psnr": float(target), "k_max": ks[-1]}
    if not math.isfinite(target):
        return out
    if ps[0] >= target:
        return {**out, "k": ks[0], "bound": "below"}
    for (k0, p0), (k1, p1) in zip(zip(ks, ps), zip(ks[1:], ps[1:])):
        if p1 >= target:  # first crossing; p0 < target <= p1
            return {**out, "k": k0 + (k1 - k0) * (target - p0) / (p1 - p0)}
    return {**out, "bound": "above"}


class _Moments:
    """Per-entry mean and variance over images (population), from batches; shifted by the first
    image so that a constant entry has a variance of exactly 0."""

    def __init__(self) -> None:
        self.n, self.shift, self.s1, self.s2 = 0, None, None, None

    def add(self, z: torch.Tensor) -> None:  # z: (B, M)
        z = z.detach().double().cpu()
        if self.shift is None:
            self.shift = z[0].clone()
            self.s1, self.s2 = torch.zeros_like(self.shift), torch.zeros_like(self.shift)
        d = z - self.shift
        self.n += z.shape[0]
        self.s1 += d.sum(0)
        self.s2 += d.pow(2).sum(0)

    def variance(self) -> np.ndarray:
        m = self.s1 / self.n
        return (self.s2 / self.n - m.pow(2)).clamp_min(0).numpy()


# ---------------------------------------------------------------- one model over a split

@torch.no_grad()
def model_diagnostics(model: torch.nn.Module, batches: Iterable[torch.Tensor], beta: float = 1.0,
                      recon: str = "bce") -> dict[str, Any]:
    """Diagnostics of a VAE (its output has "mu") or an AE over ``batches`` of (B, C, S, S) images in [0, 1].

    VAE: per-dimension KL (nats and bits, mean over images), Var_x(μ_d), the rate in nats / bits per
    image and bits per pixel, active units, and the loss terms of ``losses.vae_loss`` at z = μ
    (``recon`` per image as trained; ``elbo`` = −(recon + KL), β = 1; ``loss`` = recon + β KL).
    AE: its latent's channels and positions, and the entries whose value varies across images.
    """
    model.eval()
    moments, kl_sum, rec_sum, pixels = _Moments(), None, 0.0, 0
    for x in batches:
        out = model(x)
        pixels = int(np.prod(x.shape[1:]))
        if "mu" in out:
            kl = kl_per_dim(out["mu"], out["logvar"]).double().sum(0).cpu()  # (L,)
            kl_sum = kl if kl_sum is None else kl_sum + kl
            rec_sum += float(vae_loss(out, x, beta=beta, recon=recon)["recon"]) * x.shape[0]
            moments.add(out["mu"])
        else:
            moments.add(out["z"].flatten(1))
            shape = list(out["z"].shape[1:])
    n, var = moments.n, moments.variance()
    if kl_sum is None:
        return _ae_diagnostics(n, var, shape)
    kl = (kl_sum / n).numpy()
    rate = float(kl.sum())
    rec = rec_sum / n
    return {"version": VERSION, "n": n, "latent_dim": len(kl), "pixels": pixels,
            "kl_per_dim_nats": kl.tolist(), "kl_per_dim_bits": to_bits(kl).tolist(), "mu_variance": var.tolist(),
            "rate_nats_per_image": rate, "rate_bits_per_image": to_bits(rate),
            "rate_bits_per_pixel": to_bits(rate) / pixels,
            "active_units": active_units(var), "active_threshold": ACTIVE_THRESHOLD,
            "active_at": counts_above(var, THRESHOLDS),
            "recon": rec, "recon_kind": recon, "kl": rate, "elbo": -(rec + rate), "beta": beta,
            "loss": rec + beta * rate}


def _ae_diagnostics(n: int, var: np.ndarray, shape: list[int]) -> dict[str, Any]:
    """The AE's feature map (C, H, W): entries and channels whose value varies across images."""
    per_channel = var.reshape(shape[0], -1)  # (C, H*W)
    return {"version": VERSION, "n": n, "latent_shape": shape, "latent_channels": shape[0],
            "latent_positions": int(np.prod(shape[1:])), "latent_entries": int(var.size),
            "active_entries": int((var > ACTIVE_THRESHOLD).sum()), "active_threshold": ACTIVE_THRESHOLD,
            "varying_entries": int((var > 0).sum()), "active_at": counts_above(var, AE_THRESHOLDS),
            "active_channels": int((per_channel > ACTIVE_THRESHOLD).any(1).sum()),
            "dead_channels": int((per_channel <= 0).all(1).sum())}


# ---------------------------------------------------------------- PCA's curve, once per split

def pca_curve(train_u8: np.ndarray, test_u8: np.ndarray, ks: Sequence[int] = PCA_KS,
              batch: int = 500) -> dict[str, Any]:
    """Mean test PSNR (dB) of PCA-k for each k (capped by the components the training split allows).

    PCA is fitted once on ``train_u8`` ((N, S, S) uint8) with max(ks) components; PCA-k is its
    first k (``PCA.truncate``); k = 0 decodes every image to the training mean.
    """
    pca = PCA(max(ks)).fit(train_u8)
    kmax = pca.components.shape[0]
    ks = sorted({min(int(k), kmax) for k in ks})
    parts: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for start in range(0, len(test_u8), batch):
        chunk = np.ascontiguousarray(test_u8[start:start + batch])
        x, codes = to_float(chunk), pca.encode(chunk)  # (B, 1, S, S), (B, kmax)
        for k in ks:
            parts[k].append(psnr(pca.truncate(k).decode(codes[:, :k]), x))
    return {"k": ks, "psnr": [float(torch.cat(parts[k]).mean()) for k in ks], "n_train": len(train_u8),
            "n_test": len(test_u8)}


def curve_key(data: dict[str, Any], split: dict[str, np.ndarray], ks: Sequence[int] = PCA_KS) -> str:
    """What a PCA curve depends on: the data section of a run's config, its train and test indices, the ks."""
    h = hashlib.sha256(json.dumps({"data": data, "ks": list(ks), "version": VERSION}, sort_keys=True,
                                  default=str).encode())
    for name in ("train", "test"):
        h.update(np.ascontiguousarray(split[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def cached_pca_curve(folder: Path, key: str, images: np.ndarray, split: dict[str, np.ndarray],
                     also: Sequence[Path] = ()) -> dict[str, Any]:
    """``pca_curve`` of ``images`` ((N, S, S) uint8) split by ``split`` ("train", "test" indices), read from
    ``folder/pca_curve.json`` (or from one in the folders ``also``: the key names the data and split, so any
    file holding it holds the same curve), else computed once and added to ``folder/pca_curve.json``."""
    for other in also:
        found = read_pca_curves(other).get(key)
        if found is not None:
            return found
    curves = read_pca_curves(folder)
    if key not in curves:
        curves[key] = pca_curve(images[split["train"]], images[split["test"]])
        write_json(Path(folder) / PCA_CURVE_JSON, {"curves": curves})
    return curves[key]
