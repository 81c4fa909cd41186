"""Autoencoders and variational autoencoders as compressors of 128x128 grayscale faces.

Modules (one concept each): data, synthetic, models, losses, regularization, noise,
metrics, train, experiments, report, compression; the CLI is ``python -m src``.
"""
