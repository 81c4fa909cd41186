"""Names and looks shared by the report's figures and tables: file names, labels, colours, digits.

Figure names keep the original study's, so existing links work.
"""
from __future__ import annotations

from ..results import REG_LABEL

FIGURES = {
    "ae": {"recon": "AE_reg_images2.png", "noise": "AE_noise_reg_images.png", "loss": ["AE_loss.png"]},
    "vae": {"recon": "vae_reg_images_2.png", "noise": "VAE_noise_reg_images.png",
            "loss": ["VAE_train_loss.png", "VAE_val_loss.png"]},
}
RD_FIGURES = ("rd_psnr.png", "rd_ssim.png")
VAE_FIGURES = ("vae_kl_per_dim.png", "vae_rate_distortion.png")  # report.vae: KL per dimension, the VAE's RD plane
GENERATOR_FIGURES = ("vae_prior_samples", "vae_interpolation", "vae_mu_vs_sampled")
SWEEP_FIGURES = {"sweep_lambda": ("l1", "l2"), "sweep_vae_latent": ("latent",), "sweep_vae_beta": ("beta",),
                 "sweep_ae_channels": ("channels",)}  # figure name: the sweeps it draws
SWEEP_LABEL = {"l1": "L1 strength λ1", "l2": "L2 strength λ2", "latent": "VAE latent size",
               "beta": "VAE β (KL weight)", "channels": "AE bottleneck channels"}
DIGITS = {"mse": 5, "psnr": 2, "ssim": 4}  # decimals of each metric in every table
COLORS = {reg: f"C{i}" for i, reg in enumerate(REG_LABEL)}
RD_STYLE = {"ae": ("C0", "o"), "vae": ("C1", "s"), "pca": ("C2", "^"), "jpeg": ("C3", "v"),
            "webp": ("C4", "D"), "jpeg2000": ("C5", "P")}  # method: (colour, marker); variants share the colour
DPI = 110
