"""Procedural face-like grayscale images: the embedded default dataset.

Face ``index`` of a sample is drawn from its own generator
``np.random.default_rng([seed, index])``, so it does not depend on the sample size or on
the order of generation. A face is painted back to front from soft (anti-aliased)
ellipses in a shifted, rotated face frame: background (gradient, low-frequency texture,
clutter), clothes and neck, hair, a Lambert-lit oval face with eyes, brows, nose and
mouth, a fringe, sometimes glasses; then blur and sensor noise. Coordinates are in image
widths, centred on the image, x to the right and y down. Pure numpy, float32.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from src.utils import UserError, atomic_path, read_json, write_json

GENERATOR = "src.synthetic"
MARKER = "SAMPLE.json"  # written last: its presence means the sample is complete
PARTIAL = ".SAMPLE.partial.json"  # written first: claims the folder while writing
F = np.float32
Pose = tuple[float, float, float, float]  # face centre x, y (image widths), cos, sin


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise of std <~1 varying over ``cells`` cells per side."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(F)
    t = (np.arange(size, dtype=F) + F(0.5)) * F(cells / size)
    i = np.minimum(t.astype(np.int64), cells - 1)
    w = t - i.astype(F)  # keeps float32: int64 would promote to float64
    w = w * w * (3 - 2 * w)  # smoothstep hides the bilinear grid lines
    w0, w1 = (1 - w)[:, None], w[:, None]
    rows = grid[i] * w0 + grid[i + 1] * w1  # (size, cells + 1)
    cols = np.ascontiguousarray(rows.T)  # gathering whole rows is faster than columns
    return cols[i] * w0 + cols[i + 1] * w1


def _wave(phase: np.ndarray) -> np.ndarray:
    """Sine-like parabolic wave in [-1, 1] of period 1 (same shape as ``phase``).

    Only exactly rounded ops (np.sin's SIMD kernels may differ by an ulp between CPUs).
    """
    f = phase - np.floor(phase)
    return F(8) * f * (1 - f) - F(1)


def _frame(size: int, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Face-frame coordinates X, Y of every pixel centre, each (size, size) float32."""
    cx, cy, c, s = pose
    t = (np.arange(size, dtype=F) + F(0.5)) / F(size) - F(0.5)
    dx, dy = t[None, :] - F(cx), t[:, None] - F(cy)
    return F(c) * dx + F(s) * dy, F(c) * dy - F(s) * dx


def _window(pose: Pose, fx: float, fy: float, reach: float, size: int) -> tuple[slice, slice]:
    """Pixel rows/cols covering the disc of radius ``reach`` at face point (fx, fy)."""
    cx, cy, c, s = pose
    x, y = cx + c * fx - s * fy, cy + s * fx + c * fy

    def span(v: float) -> slice:
        lo = int(np.floor((v + 0.5 - reach) * size)) - 1
        hi = int(np.ceil((v + 0.5 + reach) * size)) + 1
        return slice(min(max(lo, 0), size), min(max(hi, 0), size))

    return span(y), span(x)


def _ellipse(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             size: int, soft: float = 1.0) -> np.ndarray:
    """Soft ellipse mask in [0, 1]; its edge ramps over about ``soft`` pixels."""
    dx, dy = (X - F(cx)) * F(1 / rx), (Y - F(cy)) * F(1 / ry)
    gain = min(rx, ry) * size / (2 * soft)  # q = dx^2 + dy^2 grows by 2/r per unit
    return np.clip((1 - dx * dx - dy * dy) * F(gain) + F(0.5), 0, 1)


def _blob(img: np.ndarray, X: np.ndarray, Y: np.ndarray, pose: Pose, cx: float, cy: float,
          rx: float, ry: float, value: float, soft: float = 1.0, mul: bool = False) -> None:
    """Paint an ellipse into ``img`` in place: blend towards ``value`` or multiply by it."""
    size = img.shape[0]
    sl = _window(pose, cx, cy, max(rx, ry) + soft / size, size)
    m = _ellipse(X[sl], Y[sl], cx, cy, rx, ry, size, soft)
    if mul:
        img[sl] *= 1 - m * F(1 - value)
    else:
        img[sl] += m * (F(value) - img[sl])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + low-frequency texture + a few flat boxes (clutter), (size, size)."""
    t = (np.arange(size, dtype=F) + F(0.5)) / F(size) - F(0.5)
    gx, gy = rng.uniform(-0.5, 0.5, 2)
    img = F(rng.uniform(0.15, 0.85)) + F(gx) * t[None, :] + F(gy) * t[:, None]
    img = img + F(rng.uniform(0.02, 0.12)) * _smooth_noise(rng, size, int(rng.integers(2, 7)))
    for _ in range(int(rng.integers(0, 5))):
        y0, x0 = rng.integers(0, size, 2)
        h, w = rng.integers(size // 16, size // 2, 2)
        img[y0:y0 + h, x0:x0 + w] += F(rng.uniform(-0.25, 0.25))
    return img


def _hair(rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Y: np.ndarray,
          pose: Pose, a: float, b: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """Paint the hair behind the head; return (texture, mask, long hair?) for what follows."""
    size = img.shape[0]
    level = rng.uniform(0.04, 0.6)  # black to blond
    freq, tilt = rng.uniform(13, 35), rng.uniform(-0.6, 0.6)  # strands per image width
    warp = F(rng.uniform(0.3, 1.0)) * _smooth_noise(rng, size, 5)
    strands = _wave(F(freq) * (X + F(tilt) * Y) + warp)
    tex = F(level) * (F(0.75) + F(0.25) * _smooth_noise(rng, size, 10)) + F(0.06 * level + 0.02) * strands
    volume = rng.uniform(1.08, 1.35)
    mask = _ellipse(X, Y, 0, -b * rng.uniform(0.05, 0.25), a * volume, b * rng.uniform(0.95, 1.15), size, 2)
    long_hair = rng.random() < 0.4
    if long_hair:  # hair falling to the shoulders
        fall_y, fall_h = b * rng.uniform(0.2, 0.8), b * rng.uniform(0.8, 1.3)
        fall = _ellipse(X, Y, 0, fall_y, a * volume * 1.05, fall_h, size, 2)
        mask = np.maximum(mask, fall)
    if rng.random() < 0.08:  # (nearly) bald
        mask *= F(rng.uniform(0, 0.3))
    img += mask * (tex - img)
    return tex, mask, long_hair


def _eyes(rng: np.random.Generator, alb: np.ndarray, X: np.ndarray, Y: np.ndarray,
          pose: Pose, a: float, b: float, skin: float) -> tuple[float, float, float]:
    """Sockets, eyes, irises and brows; returns (eye y, half spacing, eye half-width)."""
    ey, ex = -b * rng.uniform(0.05, 0.18), a * rng.uniform(0.36, 0.46)
    rx = a * rng.uniform(0.15, 0.21)
    ry, gaze = rx * rng.uniform(0.38, 0.6), rx * rng.uniform(-0.3, 0.3)
    iris, sclera = rng.uniform(0.05, 0.35) * skin, min(skin * rng.uniform(1.0, 1.3), 0.95)
    brow_y, brow_dark = ey - ry * rng.uniform(2.0, 3.2), rng.uniform(0.25, 0.7)
    brow_arch, brow_t = rng.uniform(-0.2, 0.8), rng.uniform(0.011, 0.022)
    socket = rng.uniform(0.6, 0.85)
    for side in (-1.0, 1.0):
        cx = side * ex
        _blob(alb, X, Y, pose, cx, ey - ry * 0.3, rx * 1.6, ry * 2.6, socket, soft=6, mul=True)
        _blob(alb, X, Y, pose, cx, ey, rx, ry, sclera)
        sl = _window(pose, cx, ey, rx + 2 / alb.shape[0], alb.shape[0])
        inside = _ellipse(X[sl], Y[sl], cx, ey, rx, ry, alb.shape[0])
        disc = _ellipse(X[sl], Y[sl], cx + gaze, ey, ry * 1.1, ry * 1.1, alb.shape[0])
        alb[sl] += inside * disc * (F(iris) - alb[sl])
        # the brow arches: its centre line bends down towards the ends
        sl = _window(pose, cx, brow_y, rx * 1.5, alb.shape[0])
        bx, by = X[sl] - F(cx), Y[sl] - F(brow_y)
        by = by - F(brow_arch * brow_t / (rx * rx)) * bx * bx
        m = _ellipse(bx, by, side * rx * 0.1, 0, rx * 1.3, brow_t, alb.shape[0])
        alb[sl] *= 1 - m * F(1 - brow_dark)
    return ey, ex, rx


def _nose_mouth(rng: np.random.Generator, alb: np.ndarray, X: np.ndarray, Y: np.ndarray,
                pose: Pose, a: float, b: float, ey: float, light_x: float) -> None:
    """Nose side shadow, nostrils, tip highlight, lips with curvature and openness."""
    ny, nw = b * rng.uniform(0.18, 0.32), a * rng.uniform(0.12, 0.18)
    side = -1.0 if light_x > 0 else 1.0  # the shadow falls away from the light
    length = (ny - ey) / 2
    shadow, under, tip, nostril = rng.uniform((0.75, 0.6, 1.05, 0.3), (0.9, 0.85, 1.2, 0.6))
    _blob(alb, X, Y, pose, side * nw * 0.6, ey + length, nw * 0.35, length, shadow, soft=4, mul=True)
    _blob(alb, X, Y, pose, 0, ny + nw * 0.5, nw * 1.4, nw * 0.45, under, soft=4, mul=True)
    _blob(alb, X, Y, pose, 0, ny - nw * 0.1, nw * 0.6, nw * 0.5, tip, soft=4, mul=True)
    for s in (-1.0, 1.0):
        _blob(alb, X, Y, pose, s * nw * 0.55, ny + nw * 0.2, nw * 0.3, nw * 0.18, nostril, soft=1.5, mul=True)
    my, mw = b * rng.uniform(0.45, 0.6), a * rng.uniform(0.28, 0.42)
    smile, lip = rng.uniform(-0.015, 0.03), rng.uniform(0.018, 0.032)
    sl = _window(pose, 0, my, mw * 1.1 + abs(smile), alb.shape[0])
    mx = X[sl] * F(1 / mw)
    my_ = Y[sl] - F(my) + F(smile) * mx * mx  # smile > 0 lifts the corners
    lips, inner = rng.uniform((0.55, 0.1), (0.85, 0.4))
    alb[sl] *= 1 - _ellipse(X[sl], my_, 0, 0, mw, lip, alb.shape[0], 1.5) * F(1 - lips)
    opening = lip * rng.uniform(0.25, 0.7) if rng.random() < 0.4 else 0.004  # open or a closed seam
    alb[sl] *= 1 - _ellipse(X[sl], my_, 0, 0, mw * 0.85, opening, alb.shape[0], 1.0) * F(1 - inner)
    _blob(alb, X, Y, pose, 0, my + lip * 2.5, mw * 0.6, lip * 0.8, rng.uniform(0.8, 0.95), soft=4, mul=True)


def _glasses(rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Y: np.ndarray,
             pose: Pose, ey: float, ex: float, rx: float) -> None:
    """Two rims, tinted lenses and a bridge."""
    size = img.shape[0]
    gx, gy = rx * rng.uniform(1.5, 1.9), rx * rng.uniform(1.0, 1.4)
    thick, dark, tint = rng.uniform(0.006, 0.014), rng.uniform(0.02, 0.3), rng.uniform(0.6, 1.0)
    for side in (-1.0, 1.0):
        sl = _window(pose, side * ex, ey, gx + 2 / size, size)
        outer = _ellipse(X[sl], Y[sl], side * ex, ey, gx, gy, size)
        inner = _ellipse(X[sl], Y[sl], side * ex, ey, gx - thick, gy - thick, size)
        img[sl] *= 1 - inner * F(1 - tint)
        img[sl] += (outer - inner) * (F(dark) - img[sl])
    _blob(img, X, Y, pose, 0, ey - gy * 0.3, max(ex - gx, 0.01) + 0.005, thick * 0.6, dark)


def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur, each pass adds a variance of 0.5 px^2 per axis."""
    for _ in range(2 * passes):
        q = F(0.25) * img
        out = q + q  # edges replicate: the missing neighbour is the pixel itself
        out[1:] += q[:-1]
        out[:-1] += q[1:]
        out[0] += q[0]
        out[-1] += q[-1]
        img = out.T  # the second pass of each pair blurs the other axis
    return img


def render_face(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One face drawn from ``rng``: uint8 array (size, size)."""
    img = _background(rng, size)
    roll = float(np.clip(rng.normal(0, 0.08), -0.2, 0.2))  # tan of the head roll angle
    cx, cy = rng.uniform(-0.06, 0.06), rng.uniform(0.0, 0.08)  # face centre, image widths
    c = 1 / math.sqrt(1 + roll * roll)  # cos, sin without trig: sqrt is exactly rounded
    pose: Pose = (cx, cy, c, roll * c)
    X, Y = _frame(size, pose)
    a = rng.uniform(0.22, 0.28)  # face half-width, image widths
    b = a * rng.uniform(1.2, 1.4)  # face half-height
    skin = rng.uniform(0.3, 0.85)
    # clothes and neck first: the head is painted over them
    clothes = F(rng.uniform(0.05, 0.9)) + F(rng.uniform(-0.15, 0.15)) * X
    m = _ellipse(X, Y, 0, b * 2.1, a * rng.uniform(1.8, 2.6), b * 1.05, size, 2)
    img += m * (clothes - img)
    _blob(img, X, Y, pose, 0, b * 1.0, a * 0.55, b * 0.6, skin * 0.7, soft=2)
    hair, hair_mask, long_hair = _hair(rng, img, X, Y, pose, a, b)
    if not long_hair and rng.random() < 0.7:  # ears in front of short hair, behind the face
        ear_y, ear = b * rng.uniform(-0.15, 0.05), skin * rng.uniform(0.6, 0.9)
        for side in (-1.0, 1.0):
            _blob(img, X, Y, pose, side * a * 0.98, ear_y, a * 0.14, b * 0.19, ear, soft=1.5)
    # face oval narrowing towards the chin, lit as an ellipsoid (Lambert + ambient)
    taper = rng.uniform(0.1, 0.3)
    xs = X * (1 / (1 - F(taper) * np.clip(Y * F(1 / b), 0, 1)))
    face_mask = _ellipse(xs, Y, 0, 0, a, b, size, 1.5)
    lx, ly = rng.uniform(-0.6, 0.6), rng.uniform(-0.5, 0.2)
    nx, ny = xs * F(1 / a), Y * F(1 / b)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
    amb = rng.uniform(0.35, 0.6)
    lz = np.sqrt(1 - lx * lx - ly * ly)
    shade = F(amb) + F(1 - amb) * np.clip(F(lx) * nx + F(ly) * ny + F(lz) * nz, 0, 1)
    alb = F(skin) + F(0.03) * _smooth_noise(rng, size, 8)
    ey, ex, rx = _eyes(rng, alb, X, Y, pose, a, b, skin)
    _nose_mouth(rng, alb, X, Y, pose, a, b, ey, lx)
    img += face_mask * (alb * shade - img)
    # fringe: hair over the forehead down to a wavy hairline
    line = -b * rng.uniform(0.4, 0.75) + F(b * rng.uniform(0.1, 0.5)) * (X * F(1 / a)) ** 2
    line = line + F(b * rng.uniform(0, 0.12)) * _wave(X * F(rng.uniform(1.6, 6.4)) + F(rng.uniform(0, 1)))
    fringe = hair_mask * np.clip((line - Y) * F(size / 1.5) + F(0.5), 0, 1)
    img += fringe * (hair - img)
    if rng.random() < 0.25:
        _glasses(rng, img, X, Y, pose, ey, ex, rx)
    img = _blur(img, int(rng.integers(0, 3)))
    img = (img - F(0.5)) * F(rng.uniform(0.8, 1.15)) + F(0.5 + rng.uniform(-0.05, 0.05))
    # uniform sensor noise: Gaussian draws would cost a quarter of the whole face
    img = img + F(rng.uniform(0.007, 0.09)) * (rng.random((size, size), dtype=F) - F(0.5))
    return np.rint(np.clip(img, 0, 1) * F(255)).astype(np.uint8)


def face(index: int, seed: int = 0, size: int = 128) -> np.ndarray:
    """Face ``index`` of the sample with ``seed``: uint8 (size, size), independent of n."""
    return render_face(np.random.default_rng([seed, index]), size)


def generate(n: int, seed: int = 0, size: int = 128, progress: bool = False) -> np.ndarray:
    """Faces 0..n-1 of the sample with ``seed``: uint8 array (n, size, size)."""
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in tqdm(range(n), desc="faces", disable=not progress):
        out[i] = face(i, seed, size)
    return out


def sample_path(root: str | os.PathLike, index: int) -> Path:
    """FFHQ thumbnail layout: root/00000/00000.png ... root/69000/69999.png."""
    return Path(root) / f"{index // 1000 * 1000:05d}" / f"{index:05d}.png"


# names a sample may hold: atomic_path's temp files are ".<name>.<random>.tmp"
_OURS_TOP = re.compile(r"\d{5}|SAMPLE\.json|\.SAMPLE\.partial\.json|\.\.?SAMPLE(\.partial)?\.json\..+\.tmp")
_OURS_PNG = re.compile(r"\.?(\d{5})\.png(\..+\.tmp)?")
_BROWSER_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # left alone, neither ours nor data


def _claim(path: Path) -> dict | None:
    """A marker's parameters if it exists and was written by this generator."""
    try:
        info = read_json(path)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("generator") == GENERATOR else None


def _sample_files(out: Path) -> list[Path]:
    """Every file under ``out`` that fits the sample layout (folders excluded).

    Raises:
        UserError: naming the first entry that does not fit, so nothing is touched.
    """
    files = []
    for top in sorted(out.iterdir()):
        if top.name in _BROWSER_FILES:
            continue
        if not _OURS_TOP.fullmatch(top.name) or top.is_dir() != top.name.isdigit():
            raise UserError(f"{top} is not part of a synthetic sample; choose an empty or new folder")
        if not top.is_dir():
            files.append(top)
            continue
        for f in sorted(top.iterdir()):
            if f.name in _BROWSER_FILES:
                continue
            m = _OURS_PNG.fullmatch(f.name)
            if not (m and f.is_file() and int(m[1]) // 1000 * 1000 == int(top.name)):
                raise UserError(f"{f} is not part of a synthetic sample; choose an empty or new folder")
            files.append(f)
    return files


def write_sample(out_dir: str | os.PathLike, n: int = 2000, seed: int = 0, size: int = 128,
                 progress: bool = True) -> list[Path]:
    """Write faces 0..n-1 as PNGs in the FFHQ layout under ``out_dir``; return their paths.

    Same parameters give byte-identical files. ``SAMPLE.json`` is written last and marks
    the sample complete; a complete sample with the same parameters is left as it is, an
    interrupted one is resumed, and one with other parameters is replaced.

    Raises:
        UserError: ``out_dir`` holds anything but a sample made by this generator (the
            folder is then left untouched: user data is never overwritten or deleted).
    """
    out = Path(out_dir)
    params = {"generator": GENERATOR, "n": n, "seed": seed, "size": size}
    paths = [sample_path(out, i) for i in range(n)]
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder; choose a folder for the sample")
    done, partial = _claim(out / MARKER), _claim(out / PARTIAL)
    keep: set[Path] = set()
    if out.is_dir() and any(e.name not in _BROWSER_FILES for e in out.iterdir()):
        if done is None and partial is None:
            raise UserError(f"{out} is not empty and holds no {MARKER} written by {GENERATOR}; "
                            "choose an empty or new folder")
        files = _sample_files(out)
        if done == params and all(p.is_file() for p in paths):
            return paths
        # the PNGs there belong to the complete marker if any, else to the interrupted run;
        # each step below leaves the markers true of the files, so a crash can resume
        if (partial if done is None else done) == params:
            keep = set(paths)
        for f in files:
            if f not in keep and f.name not in (MARKER, PARTIAL):
                f.unlink()
    write_json(out / PARTIAL, params)
    (out / MARKER).unlink(missing_ok=True)
    for i, path in enumerate(tqdm(paths, desc="writing faces", disable=not progress)):
        if path in keep and path.is_file():
            continue
        with atomic_path(path) as tmp:
            Image.fromarray(face(i, seed, size)).save(tmp, format="PNG")
    for d in out.iterdir():  # folders emptied of a larger previous sample
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    write_json(out / MARKER, params)
    (out / PARTIAL).unlink()
    return paths
