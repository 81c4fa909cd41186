"""Image statistics that tell how hard a set of faces is to compress (``python -m src data stats``).

For (N, S, S) uint8 grayscale images, read as [0, 1] (data range 1):

- ``mean_psnr``: PSNR of the train split's mean image, on each test image;
- ``pca10_psnr`` ``pca50_psnr`` ``pca200_psnr``: PCA with k components fitted on the train
  split (``src.compression.PCA``, reconstructions clamped to [0, 1]), on the test split;
  k is capped by what the train split can span (n_train - 1 directions);
- ``jpeg50_bpp``: Pillow ``save(format="JPEG", quality=50)`` with no other option (standard
  Huffman tables, not optimized), headers counted: 8 * bytes / pixels, mean over all images;
- ``hdiff``: mean absolute difference of horizontally adjacent pixels, over all images;
- ``spectral_slope``: least-squares slope of log10(power) against log10(radius) of the
  radially averaged power spectrum, radii 4..50 cycles per image (rounded to integer bins).

PSNRs are per image, then averaged (like ``src.metrics``); the split is the project's seeded
70/10/20 ``src.data.split_indices``. Spectrum: each image has its mean removed (only the DC
term changes) and is NOT windowed; power is averaged over images, then over each integer
radius of the full 2-D spectrum. These choices reproduce issue 12's figures for the version-1
generator (14.1 / 21.4 / 25.0 / 28.9 dB, 0.75 bpp, 0.022, slope -3.2; a Hann window would make
the slope -3.4), so the issue's photograph bands apply. Without a window the FFT also sees the
jump between opposite borders as an edge. No torch at import: PCA imports it lazily.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .utils import UserError, atomic_write

KEYS = ("mean_psnr", "pca10_psnr", "pca50_psnr", "pca200_psnr", "jpeg50_bpp", "hdiff", "spectral_slope")
LABELS = {
    "mean_psnr": "PSNR of the training-set mean image, dB",
    "pca10_psnr": "PCA, 10 components, dB",
    "pca50_psnr": "PCA, 50 components, dB",
    "pca200_psnr": "PCA, 200 components, dB",
    "jpeg50_bpp": "JPEG quality 50 (Pillow), bits per pixel",
    "hdiff": "mean absolute horizontal pixel difference",
    "spectral_slope": "radial power spectrum slope, log-log, 4-50 cycles/image",
}
PCA_KS = (10, 50, 200)
SLOPE_BAND = (4, 50)  # cycles per image, inclusive
# Issue 12: two public sets of face photographs (aligned celebrities, 6,000; studio portraits,
# 400) brought to 128x128 grayscale by src.data's loader
PHOTO_BANDS = {
    "mean_psnr": (11.8, 16.3), "pca10_psnr": (17.2, 20.0), "pca50_psnr": (20.3, 22.2),
    "pca200_psnr": (23.2, 24.0), "jpeg50_bpp": (0.95, 1.01), "hdiff": (0.025, 0.030),
    "spectral_slope": (-3.2, -3.1),
}
# Issue 12: where a 2,000-face generated sample (seed 0, 128 px) must fall
TARGET_BANDS = {
    "mean_psnr": (11.5, 13.5), "pca10_psnr": (16.5, 19.5), "pca50_psnr": (19.5, 22.5),
    "pca200_psnr": (22.5, 25.0), "jpeg50_bpp": (0.85, 1.15), "hdiff": (0.025, 0.034),
    "spectral_slope": (-3.4, -2.8),
}


def _psnr(rec: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N,) PSNR in dB, data range 1, of (N, D) reconstructions against (N, D) images."""
    err = ((rec.astype(np.float64) - x) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / err)


def _float(images: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 -> (N, S*S) float64 in [0, 1]."""
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1) / 255.0


def linear_psnr(images: np.ndarray, ks=PCA_KS, seed: int = 0) -> dict:
    """Mean-image and PCA-k PSNRs (dB), fitted on the train split, averaged over the test split.

    Returns:
        {"mean_psnr", "pca<k>_psnr" for each k, "pca_k": {k: components really used}}.
    """
    from .pca import PCA  # lazy: imports torch
    from .data import split_indices

    split = split_indices(len(images), seed=seed)
    train, test = np.ascontiguousarray(images[split["train"]]), np.ascontiguousarray(images[split["test"]])
    x = _float(test)
    out = {"mean_psnr": float(_psnr(_float(train).mean(axis=0, keepdims=True), x).mean())}
    pca = PCA(max(ks)).fit(train, seed=seed)
    used = {}
    for k in ks:
        # the centred train split spans at most n_train - 1 directions; beyond those PCA adds nothing
        kk = min(k, len(train) - 1, pca.components.shape[0])
        if kk < 1:
            rec = np.broadcast_to(_float(train).mean(axis=0), x.shape)
        else:
            p = pca.truncate(kk)
            rec = p.decode(p.encode(test)).reshape(len(test), -1).numpy()
        out[f"pca{k}_psnr"] = float(_psnr(rec, x).mean())
        used[k] = kk
    out["pca_k"] = used
    return out


def jpeg_bpp(images: np.ndarray, quality: int = 50) -> float:
    """Mean bits per pixel of Pillow's JPEG at ``quality`` (plain options, headers counted)."""
    total = 0.0
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
        total += 8.0 * buf.tell() / img.size
    return total / len(images)


def horizontal_diff(images: np.ndarray) -> float:
    """Mean |x[:, j+1] - x[:, j]| over all rows and images, in [0, 1] units."""
    total, count = 0, 0
    for s in range(0, len(images), 256):  # int16 chunks: exact sums, bounded memory
        a = np.asarray(images[s:s + 256], dtype=np.int16)
        d = np.abs(np.diff(a, axis=-1))
        total += int(d.sum(dtype=np.int64))
        count += d.size
    return total / count / 255.0


def radial_spectrum(images: np.ndarray, window: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(radii 0..S/2, mean power per integer radius) of the mean-removed images.

    ``window``: multiply by a 2-D Hann window first (not the issue's definition; see above).
    """
    s = images.shape[-1]
    hann = np.hanning(s + 2)[1:-1] if window else np.ones(s)  # no zero rows: every pixel counts
    win = np.outer(hann, hann)
    power = np.zeros((s, s))
    for i in range(0, len(images), 128):
        a = np.asarray(images[i:i + 128], dtype=np.float64) / 255.0
        a = (a - a.mean(axis=(1, 2), keepdims=True)) * win
        power += (np.abs(np.fft.fft2(a)) ** 2).sum(axis=0)
    f = np.fft.fftfreq(s, 1 / s)  # cycles per image
    r = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    radii = np.arange(s // 2 + 1)
    sums = np.bincount(r.ravel(), weights=power.ravel(), minlength=len(radii))[:len(radii)]
    counts = np.bincount(r.ravel(), minlength=len(radii))[:len(radii)]
    return radii, sums / np.maximum(counts, 1) / len(images)


def spectral_slope(images: np.ndarray, band=SLOPE_BAND) -> float:
    """Slope of log10(power) vs log10(radius) over the radii in ``band`` (cycles per image)."""
    radii, power = radial_spectrum(images)
    keep = (radii >= band[0]) & (radii <= band[1]) & (power > 0)
    return float(np.polyfit(np.log10(radii[keep]), np.log10(power[keep]), 1)[0])


def image_stats(images: np.ndarray, seed: int = 0) -> dict:
    """All statistics of (N, S, S) uint8 images (N >= 3): the ``KEYS`` plus n, size and pca_k."""
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected (N, S, S) uint8 images, got {images.dtype}{images.shape}")
    if len(images) < 3:
        raise UserError(f"{len(images)} images are too few for statistics on a train/test split; need at least 3")
    out = {"n": len(images), "size": int(images.shape[1])}
    out.update(linear_psnr(images, seed=seed))
    out["jpeg50_bpp"] = jpeg_bpp(images)
    out["hdiff"] = horizontal_diff(images)
    out["spectral_slope"] = spectral_slope(images)
    return out


def _fmt(key: str, v: float) -> str:
    return f"{v:.4f}" if key == "hdiff" else f"{v:.2f}"


def format_table(stats: dict, reference: dict | None = None, ref_name: str = "real face photographs",
                 name: str = "this set") -> str:
    """Markdown table of ``stats`` (``image_stats``'s dict), with ``reference`` bands as a column."""
    head = f"| statistic (grayscale, data range 1) | {name} |"
    rule = "|---|---|"
    if reference:
        head, rule = head + f" {ref_name} |", rule + "---|"
    rows = [head, rule]
    capped = stats.get("pca_k", {})
    for key in KEYS:
        label = LABELS[key]
        k = int(key[3:-5]) if key.startswith("pca") else None
        kk = capped.get(k, capped.get(str(k))) if k else None  # JSON turns the int keys into str
        if kk is not None and kk != k:
            label += f" (only {kk} components: too few training images)"
        row = f"| {label} | {_fmt(key, stats[key])} |"
        if reference:
            lo, hi = reference[key]
            row += f" {_fmt(key, lo)} – {_fmt(key, hi)} |"
        rows.append(row)
    return "\n".join(rows)


def stats_command(root: str, n: int | None = None, as_json: bool = False, *, size: int = 128,
                  cache_dir=None, progress: bool = True) -> int:
    """Print the statistics of the images in ``root`` (first ``n``, sorted) as a table or JSON.

    Raises:
        UserError: missing or empty folder, no readable image, or fewer than 3 images.
    """
    from .data import load_images

    fs = load_images(root, size, limit=n, cache_dir=cache_dir, progress=progress)
    images = np.asarray(fs.images)
    if len(images) < 3:
        raise UserError(f"{root} holds {len(images)} readable image(s); statistics need at least 3")
    stats = image_stats(images)
    if as_json:
        print(json.dumps({"root": str(root), "skipped": len(fs.skipped), **stats,
                          "pca_k": {str(k): v for k, v in stats["pca_k"].items()}}, indent=2))
    else:
        print(f"{stats['n']} images from {root} at {size}x{size}"
              + (f" ({len(fs.skipped)} files skipped)" if fs.skipped else ""))
        print(format_table(stats, PHOTO_BANDS, name=Path(root).name or str(root)))
        print("PCA figures rise with the number of images (more training images); the photograph "
              "bands come from sets of 400 and 6,000 images.")
    return 0


def synthetic_grid_figure(path, n: int = 32, seed: int = 0, cols: int = 8) -> Path:
    """Faces 0..n-1 of ``src.synthetic`` with ``seed`` as a grid PNG (cols per row) at ``path``."""
    from matplotlib.figure import Figure  # lazy, and no pyplot: no global backend state

    from . import synthetic

    faces = synthetic.generate(n, seed=seed)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.3 * cols, 1.3 * rows + 0.35))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < n:
            ax.imshow(faces[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    fig.suptitle(f"src.synthetic v{synthetic.GENERATOR_VERSION}: faces 0-{n - 1}, seed {seed}, "
                 f"{faces.shape[1]} px", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.3 / (1.3 * rows + 0.35),
                        wspace=0.04, hspace=0.04)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
