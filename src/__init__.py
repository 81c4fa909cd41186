"""Autoencoders and variational autoencoders as compressors of 128x128 grayscale faces.

One concept per module, from the ground up (a module imports only modules above it in this list):

    utils          user-facing errors, seeding, atomic file writes
    metrics        batched MSE / PSNR / SSIM, equal to scikit-image's definitions
    losses         reconstruction and KL terms, returned as dicts
    noise          Gaussian and salt-and-pepper corruptions, CPU-seeded per (seed, condition)
    stats          mean ± std over seeds, the paired Wilcoxon test, Holm correction
    budget         a piece's time budget: the plan's arithmetic, the clock that admits work
    synthetic      the procedural face generator (the embedded default dataset)
    sample         the generated sample on disk: PNG files, versioned marker, all cores
    decode         one image file -> (S, S) uint8 grayscale (any format, depth, mode)
    parallel       worker processes for per-image jobs (decoding, coding), started without torch
    checkpoint     checkpoint files: atomic, CRC-verified, with RNG state
    export         a weight-free results bundle (folder or .tar.gz), and keeping one up to date
    data           finding, decoding, caching and splitting images; a run's data fingerprint
    config         every configuration dataclass and the presets (no torch: the CLI's flags)
    results        the one reader of the results store (run and grid folders)
    compression    real byte counts of one image: latent quantization and coding, Pillow codecs (no torch)
    pca            PCA on images and the mean-image / PCA baseline rows
    imagestats     image statistics of how hard a face set is to compress
    models         ConvAE, LinearVAE and their registry
    regularization L1, L2 and elastic-net weight penalties
    distributed    torchrun: process group, ranks, the cost-balanced split of the grid
    train          the training loop: fit one run, checkpoint it, resume it
    stacked        many runs of one architecture trained together as one stacked model
    evaluation     per-image metrics of a trained run on val and test, clean and noisy
    claims         verdicts on the four claims and the paired tables -> claims.json
    experiments    presets and the experiment grid; runs what is not done yet
    rd             rate-distortion curves in real bytes -> rd/*.json
    sweeps         noise sweeps and parameter sweeps of a finished grid
    figdata        the images the figures show, computed once -> figure_data.npz
    piece          a piece of the protocol: its budget, its bundle written as each run finishes
    merge          bundles of one study (other seeds, models) merged into one results folder
    report/        figures, tables, the README headline and docs/results.md, from the store only (no torch)
    __main__       the CLI: ``python -m src <command>``
"""
