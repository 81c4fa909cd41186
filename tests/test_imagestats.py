"""Tests for the image statistics behind `python -m src data stats` (src/imagestats.py).

Each statistic is checked on images whose answer is known for an independent reason
(white noise, a synthesized power law, a ramp, a low-rank set, Pillow's own bytes).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src import imagestats
from src.data import split_indices
from src.imagestats import (KEYS, PHOTO_BANDS, TARGET_BANDS, format_table, horizontal_diff, image_stats,
                            jpeg_bpp, linear_psnr, spectral_slope, stats_command, synthetic_grid_figure)
from src.utils import UserError


def _power_law(n: int, size: int, exponent: float, seed: int = 0) -> np.ndarray:
    """(n, size, size) uint8 fields whose power spectrum is |f|^-exponent (random phases).

    Periodic by construction, so the image borders add no edge of their own.
    """
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size, 1 / size)
    r = np.hypot(f[:, None], f[None, :])
    amp = np.where(r > 0, r, np.inf) ** (-exponent / 2)  # the DC term is 0
    out = []
    for _ in range(n):
        spec = amp * np.exp(2j * np.pi * rng.random((size, size)))
        x = np.fft.ifft2(spec).real
        x = (x - x.min()) / (x.max() - x.min())
        out.append(np.rint(x * 255))
    return np.asarray(out, dtype=np.uint8)


def test_white_noise_has_a_flat_spectrum():
    x = np.random.default_rng(0).integers(0, 256, (40, 128, 128), dtype=np.uint8)
    assert abs(spectral_slope(x)) < 0.1


@pytest.mark.parametrize("exponent", [2.0, 3.0])
def test_a_power_law_field_has_its_slope(exponent):
    # quantization to uint8 adds a flat floor far below the field at 50 cycles per image
    assert spectral_slope(_power_law(30, 128, exponent)) == pytest.approx(-exponent, abs=0.1)


def test_horizontal_difference_of_ramps_and_stripes():
    ramp = np.broadcast_to(np.arange(128, dtype=np.uint8) * 2, (3, 128, 128))  # +2 per column
    assert horizontal_diff(ramp) == pytest.approx(2 / 255)
    stripes = np.zeros((2, 16, 16), np.uint8)
    stripes[:, :, ::2] = 255  # every neighbour pair differs by the full range
    assert horizontal_diff(stripes) == pytest.approx(1.0)
    assert horizontal_diff(np.full((2, 8, 8), 77, np.uint8)) == 0.0


def test_jpeg_bpp_is_the_length_of_pillows_own_output():
    x = _power_law(5, 64, 2.5, seed=3)
    sizes = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=50)
        sizes.append(len(buf.getvalue()))
    assert jpeg_bpp(x) == pytest.approx(np.mean([8 * s / 64 ** 2 for s in sizes]))
    flat = np.full((2, 64, 64), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    assert jpeg_bpp(flat) < jpeg_bpp(x) < 3 < jpeg_bpp(noise)  # headers, texture, incompressible


def test_pca_with_k_at_least_the_rank_reconstructs_exactly():
    # every image is a small integer mix of 3 fixed patterns: rank 3 around any mean
    rng = np.random.default_rng(0)
    base = rng.integers(0, 40, (3, 32, 32))
    mix = rng.integers(0, 3, (40, 3))
    x = np.einsum("nk,khw->nhw", mix, base).astype(np.uint8)  # <= 2 * 3 * 39 = 234
    out = linear_psnr(x, ks=(1, 10))
    assert out["pca10_psnr"] > 80  # float32 rounding only
    assert out["pca1_psnr"] < 60 and out["mean_psnr"] < out["pca1_psnr"]


def test_mean_image_psnr_is_the_train_mean_scored_on_test():
    # flat images: the reconstruction error of image i is (v_i - mean of the train v) ^ 2
    v = np.random.default_rng(1).integers(0, 256, 30)
    x = np.broadcast_to(v[:, None, None], (30, 8, 8)).astype(np.uint8)
    split = split_indices(30)
    m = v[split["train"]].mean() / 255
    expected = np.mean([10 * np.log10(1 / (vi / 255 - m) ** 2) for vi in v[split["test"]]])
    assert linear_psnr(x, ks=(1,))["mean_psnr"] == pytest.approx(expected, rel=1e-9)


def test_pca_k_is_capped_by_the_training_split():
    x = np.random.default_rng(0).integers(0, 256, (10, 16, 16), dtype=np.uint8)  # 7 train images
    stats = image_stats(x)
    assert stats["pca_k"] == {10: 6, 50: 6, 200: 6}  # 7 centred images span 6 directions
    assert stats["pca10_psnr"] == stats["pca50_psnr"] == stats["pca200_psnr"]
    assert "only 6 components" in format_table(stats)


def test_image_stats_keys_and_table():
    x = _power_law(12, 32, 3.0)
    stats = image_stats(x)
    assert set(KEYS) <= set(stats) and stats["n"] == 12 and stats["size"] == 32
    table = format_table(stats, PHOTO_BANDS)
    lines = table.splitlines()
    assert len(lines) == 2 + len(KEYS) and all(line.count("|") == 4 for line in lines)
    assert "11.80 – 16.30" in table  # the photographs' mean-image band from issue 12
    assert all(lo < hi for lo, hi in (*PHOTO_BANDS.values(), *TARGET_BANDS.values()))
    with pytest.raises(UserError):
        image_stats(x[:2])


def _odd_folder(root) -> None:
    """Images of many kinds and sizes in nested folders, plus files that are not images."""
    rng = np.random.default_rng(0)
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (90, 60), dtype=np.uint8)).save(root / "tall.png")
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(root / "nested" / "wide.JPG")
    Image.fromarray(rng.integers(0, 65536, (50, 50), dtype=np.uint16)).save(root / "nested" / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (128, 128, 4), dtype=np.uint8)).save(root / "nested" / "deeper" / "a.png")
    Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)).convert("P").save(root / "palette.bmp")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def test_stats_command_on_a_folder_of_odd_files(tmp_path, capsys):
    _odd_folder(tmp_path / "odd")
    with pytest.warns(UserWarning, match="broken.png"):
        assert stats_command(str(tmp_path / "odd"), None, False, cache_dir=tmp_path / "c", progress=False) == 0
    out = capsys.readouterr().out
    assert "5 images" in out and "1 files skipped" in out and "real face photographs" in out
    with pytest.warns(UserWarning):  # --n counts files in sorted order: broken.png is one of the 5
        assert stats_command(str(tmp_path / "odd"), 5, True, cache_dir=tmp_path / "c", progress=False) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n"] == 4 and stats["size"] == 128 and stats["skipped"] == 1
    assert stats["pca_k"] == {"10": 1, "50": 1, "200": 1}  # 2 train images span 1 direction
    assert all(np.isfinite(stats[k]) for k in KEYS)


@pytest.mark.parametrize("case", ["empty", "missing", "two images"])
def test_stats_command_explains_an_unusable_folder(tmp_path, case):
    root = tmp_path / "d"
    if case != "missing":
        root.mkdir()
        (root / "README.md").write_text("no images here")
    if case == "two images":
        for i in range(2):
            Image.fromarray(np.full((16, 16), i * 100, np.uint8)).save(root / f"{i}.png")
    with pytest.raises(UserError) as e:
        stats_command(str(root), None, False, cache_dir=tmp_path / "c", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(root) in msg


def test_grid_figure_is_a_png_of_the_asked_faces(tmp_path):
    path = synthetic_grid_figure(tmp_path / "fig" / "grid.png", n=6, cols=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height > 200
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["grid.png"]  # no temp file left


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, src.imagestats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(imagestats.__file__).parents[1])
    assert out.stdout.strip() == "False"
