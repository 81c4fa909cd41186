"""Procedural face-like grayscale images: the embedded default dataset.

Face ``index`` of a sample comes from its own ``np.random.default_rng([seed, index])``, so it
does not depend on the sample size or order. Painted back to front: a cluttered, textured,
sometimes defocused scene; clothes; hair (strands, locks, frayed outline); a Lambert-lit head
turned by roll and yaw, with skin texture, eyes, brows, nose, mouth; a fringe; sometimes
glasses, a hat or a blurred foreground object; then uneven light, exposure, tone curve,
defocus and sensor noise. Coordinates: image widths, centred, x right, y down; numpy float32.

Version 2 (issue 12) matches a 2,000-face sample to face photographs on the statistics of
``src.imagestats`` (its ``TARGET_BANDS``); version 1 faces were far easier to compress. Only
exactly rounded operations (+ - * / sqrt floor clip) touch pixels: numpy's SIMD sin, exp or
power and BLAS may differ by an ulp between CPUs, and samples must be byte-identical.
"""
from __future__ import annotations

import math

import numpy as np

from .utils import progress_bar

GENERATOR = "src.synthetic"
GENERATOR_VERSION = 2  # bump whenever faces change; SAMPLE.json records it, so stale samples are remade
F = np.float32
Pose = tuple[float, float, float, float]  # face centre x, y (image widths), cos, sin
SCENE: Pose = (0.0, 0.0, 1.0, 0.0)  # the image's own frame, for what is not attached to the face


def _up2(a: np.ndarray) -> np.ndarray:
    """(h, w) -> (2h, 2w): linear interpolation at the new pixel centres, edges replicated."""
    h, w = a.shape
    p = np.empty((h + 2, w), F)
    p[1:-1], p[0], p[-1] = a, a[0], a[-1]
    q, rows = F(0.75) * a, np.empty((h, 2, w), F)  # rows 2i and 2i + 1 of the result
    np.add(q, F(0.25) * p[:-2], out=rows[:, 0])
    np.add(q, F(0.25) * p[2:], out=rows[:, 1])
    r = rows.reshape(2 * h, w)
    p = np.empty((2 * h, w + 2), F)
    p[:, 1:-1], p[:, 0], p[:, -1] = r, r[:, 0], r[:, -1]
    q, out = F(0.75) * r, np.empty((2 * h, w, 2), F)
    np.add(q, F(0.25) * p[:, :-2], out=out[:, :, 0])
    np.add(q, F(0.25) * p[:, 2:], out=out[:, :, 1])
    return out.reshape(2 * h, 2 * w)


def _fractal(rng: np.random.Generator, size: int, decay: float, base: int = 4) -> np.ndarray:
    """(size, size) float32 multi-scale noise (std ~1): each octave's amplitude is ``decay``
    times the coarser one's (power falling as about f^(-2 - 2 log2(1/decay))), up to
    octaves of 2 pixels (pixel-level noise is the camera's)."""
    a, n, amp = rng.standard_normal((base, base)).astype(F), base, F(1)
    while n < size:
        a, n, amp = _up2(a), 2 * n, amp * F(decay)
        if n < size:
            a += (rng.random((n, n), dtype=F) - F(0.5)) * (amp * F(3.46))  # uniform of std amp
    return a[:size, :size]


def _wave(phase: np.ndarray) -> np.ndarray:
    """Sine-like parabolic wave in [-1, 1] of period 1 (same shape as ``phase``)."""
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
    lo = [math.floor((v + 0.5 - reach) * size) - 1 for v in (y, x)]
    hi = [math.ceil((v + 0.5 + reach) * size) + 1 for v in (y, x)]
    return _span(lo[0], hi[0] - lo[0], size), _span(lo[1], hi[1] - lo[1], size)


def _inside(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """1 - (normalized squared distance): 1 at the centre of the ellipse, 0 on its edge."""
    dx, dy = (X - F(cx)) * F(1 / rx), (Y - F(cy)) * F(1 / ry)
    return 1 - dx * dx - dy * dy


def _ellipse(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             size: int, soft: float = 1.0) -> np.ndarray:
    """Soft ellipse mask in [0, 1]; its edge ramps over about ``soft`` pixels."""
    gain = min(rx, ry) * size / (2 * soft)  # the inside value falls by 2/r per unit of distance
    return (_inside(X, Y, cx, cy, rx, ry) * F(gain) + F(0.5)).clip(0, 1)


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
    return np.ascontiguousarray(img)  # C order again: later ops mix it with C-ordered arrays


def _span(lo: int, length: int, size: int) -> slice:  # lo..lo+length, clipped to the image
    return slice(min(max(lo, 0), size), min(max(lo + length, 0), size))


def _background(rng: np.random.Generator, TX: np.ndarray, TY: np.ndarray) -> np.ndarray:
    """A cluttered scene (image-frame coordinates TX, TY): gradient, multi-scale texture,
    boxes, bars, shelves of books or blinds, soft lamps; then a depth-of-field blur."""
    size, t, (gx, gy) = TX.shape[0], TX[0], rng.uniform(-0.45, 0.45, 2)
    img = (F(rng.uniform(0.25, 0.75)) + F(gx) * t)[None, :] + (F(gy) * t)[:, None]
    img += F(rng.uniform(0.03, 0.24)) * _fractal(rng, size, rng.uniform(0.45, 0.72), base=8)
    for _ in range(int(rng.integers(3, 15))):
        y0, x0, h, w, v, kind = rng.random(6).tolist()  # one draw: each Generator call costs ~2 us
        y0, x0, h, w = (int(y0 * size * 1.25) - size // 4, int(x0 * size * 1.25) - size // 4,
                        size // 16 + int(h * size * 0.7), size // 16 + int(w * size * 0.7))
        sl, v = (_span(y0, h, size), _span(x0, w, size)), 0.8 * v - 0.4
        if kind < 0.4:  # a flat box: door, window, picture, furniture
            img[sl] += F(v)
        elif kind < 0.55:  # a thin bar: a frame, a shelf edge, a cable
            thick = int(rng.integers(1, 5))
            img[(_span(y0, thick, size), sl[1]) if kind < 0.48 else (sl[0], _span(x0, thick, size))] += F(2 * v)
        elif kind < 0.85:  # a row of things of random widths: books, blinds, railings
            profile = np.repeat(rng.uniform(-abs(v), abs(v), size).astype(F), rng.integers(1, 9, size))
            n = sl[1].stop - sl[1].start if kind < 0.7 else sl[0].stop - sl[0].start
            img[sl] += profile[None, :n] if kind < 0.7 else profile[:n, None]
        else:  # a lamp or a plant: a soft disc
            r = rng.uniform(0.04, 0.2)
            _blob(img, TX, TY, SCENE, rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), r, r,
                  rng.uniform(0.05, 0.95), soft=r * size * 0.6)
    return _blur(img, int(np.searchsorted((0.6, 0.85, 0.97), rng.random(), "right")))  # 0-3 passes: 60/25/12/3 %


def _clothes(rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Y: np.ndarray,
             pose: Pose, a: float, b: float, skin: float, tex: np.ndarray) -> None:
    """Shoulders in textured cloth (``tex``: folds and weave, sometimes stripes), and a collar."""
    size = img.shape[0]
    cy, rx, ry = b * rng.uniform(1.9, 2.3), a * rng.uniform(1.7, 2.8), b * 1.05
    sl = _window(pose, 0, cy, max(rx, ry) + 2 / size, size)
    Xs, Ys = X[sl], Y[sl]
    cloth = F(rng.uniform(0.05, 0.9)) + F(rng.uniform(-0.2, 0.2)) * Xs + F(rng.uniform(0.03, 0.18)) * tex[sl]
    if rng.random() < 0.45:  # stripes or checks
        k, tilt = rng.uniform(8, 30), rng.uniform(-0.5, 0.5)
        cloth = cloth + F(rng.uniform(0.05, 0.2)) * _wave(F(k) * (Xs + F(tilt) * Ys))
    img[sl] += _ellipse(Xs, Ys, 0, cy, rx, ry, size, 2) * (cloth - img[sl])
    if rng.random() < 0.5:  # a collar or neckline below the neck
        _blob(img, X, Y, pose, 0, b * 1.5, a * rng.uniform(0.5, 0.8), b * rng.uniform(0.1, 0.25),
              rng.uniform(0.05, 0.95), soft=1.5)


def _hair(rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Y: np.ndarray,
          pose: Pose, a: float, b: float, tex: np.ndarray) -> tuple[tuple, np.ndarray, np.ndarray, bool]:
    """Paint the hair behind the head; return (window, texture, mask, long hair?) for the fringe.

    Strands and locks radiate from a crown above the head (phase ~ X / (Y - crown)),
    waved along their length; ``tex`` makes them uneven and frays the outline.
    """
    size = img.shape[0]
    level = rng.uniform(0.03, 0.65)  # black to blond
    k_fine, k_coarse = rng.uniform(18, 40), rng.uniform(4, 12)  # strands, locks per image width
    ragged_tex, ragged_locks = rng.uniform(0.03, 0.15), rng.uniform(0, 0.08)
    cy, rx, ry = -b * rng.uniform(0.05, 0.25), a * rng.uniform(1.05, 1.4), b * rng.uniform(0.95, 1.2)
    sl = _window(pose, 0, cy, max(rx, ry) * 1.3 + 2 / size, size)  # 1.3: room for frayed strands
    long_hair = rng.random() < 0.4
    if long_hair:  # hair falling to the shoulders
        fall_y, fall_h, fall_w = b * rng.uniform(0.2, 0.8), b * rng.uniform(0.8, 1.4), rx * rng.uniform(0.95, 1.2)
        sl2 = _window(pose, 0, fall_y, max(fall_w, fall_h) * 1.3 + 2 / size, size)
        sl = tuple(slice(min(u.start, v.start), max(u.stop, v.stop)) for u, v in zip(sl, sl2))
    Xs, Ys, T = X[sl], Y[sl], tex[sl]
    # waves along the strands, a bend across them: a cheap stand-in for smooth noise
    warp = F(rng.uniform(0.2, 0.8)) * _wave(F(rng.uniform(2, 8)) * Ys + F(rng.uniform(-2, 2)) * Xs + F(rng.random()))
    fan = F(b * 1.6) * Xs / np.maximum(Ys + F(b * 1.6), F(0.05))  # X along rays from the crown, at Y = 0
    fine = _wave(F(k_fine) * fan + warp)
    coarse = _wave(F(k_coarse) * fan + F(1.7) * warp)
    strands = F(0.16 * level + 0.04) * fine + F(0.15 * level + 0.03) * coarse
    hair = F(level) * (F(0.8) + F(0.2) * T) + strands * (F(0.7) + F(0.3) * T)  # uneven, not a grating
    ragged = F(ragged_tex) * T + F(ragged_locks) * coarse  # strands stick out of the outline
    gain = F(a * size * 0.5)
    mask = ((_inside(Xs, Ys, 0, cy, rx, ry) + ragged) * gain + F(0.5)).clip(0, 1)
    if long_hair:
        fall = _inside(Xs, Ys, 0, fall_y, fall_w, fall_h)
        mask = np.maximum(mask, ((fall + ragged) * gain + F(0.5)).clip(0, 1))
    if rng.random() < 0.08:  # (nearly) bald
        mask *= F(rng.uniform(0, 0.3))
    img[sl] += mask * (hair - img[sl])
    return sl, hair, mask, long_hair


def _eyes(rng: np.random.Generator, alb: np.ndarray, X: np.ndarray, Y: np.ndarray,
          pose: Pose, a: float, b: float, skin: float, yaw: float) -> tuple[float, float, float]:
    """Sockets, eyes, irises, brows; returns (eye y, half spacing, eye half-width).
    ``yaw`` > 0 turns the head to the image's right: eyes shift right, the far one narrows."""
    size = alb.shape[0]
    ey, ex = -b * rng.uniform(0.05, 0.18), a * rng.uniform(0.36, 0.46)
    rx = a * rng.uniform(0.15, 0.21)
    ry, gaze = rx * rng.uniform(0.38, 0.6), rx * rng.uniform(-0.3, 0.3)
    iris, sclera = rng.uniform(0.05, 0.35) * skin, min(skin * rng.uniform(1.0, 1.3), 0.95)
    brow_y, brow_dark = ey - ry * rng.uniform(2.0, 3.2), rng.uniform(0.25, 0.7)
    brow_arch, brow_t = rng.uniform(-0.2, 0.8), rng.uniform(0.011, 0.022) * a / 0.25
    socket = rng.uniform(0.55, 0.85)
    for side in (-1.0, 1.0):
        cx, w = side * ex * (1 - side * yaw * 0.4) + yaw * a * 0.3, rx * (1 - side * yaw * 0.6)
        _blob(alb, X, Y, pose, cx, ey - ry * 0.3, w * 1.6, ry * 2.6, socket, soft=6, mul=True)
        _blob(alb, X, Y, pose, cx, ey, w, ry, sclera)
        sl = _window(pose, cx, ey, w + 2 / size, size)
        inside = _ellipse(X[sl], Y[sl], cx, ey, w, ry, size)
        disc = _ellipse(X[sl], Y[sl], cx + gaze, ey, ry * 1.1, ry * 1.1, size)
        alb[sl] += inside * disc * (F(iris) - alb[sl])
        # the brow arches: its centre line bends down towards the ends
        sl = _window(pose, cx, brow_y, w * 1.5, size)
        bx, by = X[sl] - F(cx), Y[sl] - F(brow_y)
        by = by - F(brow_arch * brow_t / (w * w)) * bx * bx
        m = _ellipse(bx, by, side * w * 0.1, 0, w * 1.3, brow_t, size)
        alb[sl] *= 1 - m * F(1 - brow_dark)
    return ey, ex, rx


def _nose_mouth(rng: np.random.Generator, alb: np.ndarray, X: np.ndarray, Y: np.ndarray,
                pose: Pose, a: float, b: float, ey: float, light_x: float, yaw: float) -> None:
    """Nose side shadow, nostrils, tip highlight, lips with curvature and openness."""
    ny, nw = b * rng.uniform(0.18, 0.32), a * rng.uniform(0.12, 0.18)
    nx = yaw * a * 0.55  # the nose stands out of the face: it moves most with the yaw
    side = -1.0 if light_x > 0 else 1.0  # the shadow falls away from the light
    length = (ny - ey) / 2
    shadow, under = rng.uniform(0.65, 0.9), rng.uniform(0.55, 0.85)
    tip, nostril = rng.uniform(1.05, 1.25), rng.uniform(0.25, 0.6)
    _blob(alb, X, Y, pose, nx + side * nw * 0.6, ey + length, nw * 0.35, length, shadow, soft=3, mul=True)
    _blob(alb, X, Y, pose, nx, ny + nw * 0.5, nw * 1.4, nw * 0.45, under, soft=3, mul=True)
    _blob(alb, X, Y, pose, nx, ny - nw * 0.1, nw * 0.6, nw * 0.5, tip, soft=3, mul=True)
    for s in (-1.0, 1.0):
        _blob(alb, X, Y, pose, nx + s * nw * 0.55, ny + nw * 0.2, nw * 0.3, nw * 0.18, nostril, soft=1.5, mul=True)
    my, mw = b * rng.uniform(0.45, 0.6), a * rng.uniform(0.28, 0.42) * (1 - abs(yaw) * 0.3)
    mx = yaw * a * 0.35
    smile, lip = rng.uniform(-0.015, 0.03), rng.uniform(0.018, 0.032) * a / 0.25
    sl = _window(pose, mx, my, mw * 1.1 + abs(smile), alb.shape[0])
    u = (X[sl] - F(mx)) * F(1 / mw)
    my_ = Y[sl] - F(my) + F(smile) * u * u  # smile > 0 lifts the corners
    lips, inner = rng.uniform(0.5, 0.85), rng.uniform(0.1, 0.4)
    alb[sl] *= 1 - _ellipse(X[sl], my_, mx, 0, mw, lip, alb.shape[0], 1.5) * F(1 - lips)
    opening = lip * rng.uniform(0.25, 0.7) if rng.random() < 0.4 else 0.004  # open or a closed seam
    alb[sl] *= 1 - _ellipse(X[sl], my_, mx, 0, mw * 0.85, opening, alb.shape[0], 1.0) * F(1 - inner)
    _blob(alb, X, Y, pose, mx, my + lip * 2.5, mw * 0.6, lip * 0.8, rng.uniform(0.8, 0.95), soft=3, mul=True)


def _glasses(rng: np.random.Generator, img: np.ndarray, X: np.ndarray, Y: np.ndarray,
             pose: Pose, ey: float, ex: float, rx: float, shift: float) -> None:
    """Two rims, tinted lenses and a bridge."""
    size = img.shape[0]
    gx, gy = rx * rng.uniform(1.5, 1.9), rx * rng.uniform(1.0, 1.4)
    thick, dark, tint = rng.uniform(0.006, 0.014), rng.uniform(0.02, 0.3), rng.uniform(0.5, 1.0)
    for cx in (shift - ex, shift + ex):
        sl = _window(pose, cx, ey, gx + 2 / size, size)
        outer = _ellipse(X[sl], Y[sl], cx, ey, gx, gy, size)
        inner = _ellipse(X[sl], Y[sl], cx, ey, gx - thick, gy - thick, size)
        img[sl] *= 1 - inner * F(1 - tint)
        img[sl] += (outer - inner) * (F(dark) - img[sl])
    _blob(img, X, Y, pose, shift, ey - gy * 0.3, max(ex - gx, 0.01) + 0.005, thick * 0.6, dark)


def render_face(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One face drawn from ``rng``: uint8 array (size, size)."""
    TX, TY = _frame(size, SCENE)
    img = _background(rng, TX, TY)
    roll = min(max(rng.normal(0, 0.08), -0.25), 0.25)  # tan of the head roll angle
    cx, cy = rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.1)  # face centre, image widths
    c = 1 / math.sqrt(1 + roll * roll)  # cos, sin without trig: sqrt is exactly rounded
    pose: Pose = (cx, cy, c, roll * c)
    X, Y = _frame(size, pose)
    a = rng.uniform(0.19, 0.29)  # face half-width, image widths
    b = a * rng.uniform(1.18, 1.42)  # face half-height
    yaw, skin = min(max(rng.normal(0, 0.2), -0.45), 0.45), rng.uniform(0.25, 0.85)
    # one texture serves cloth, hair and skin: they cover different pixels
    tex = _fractal(rng, size, rng.uniform(0.5, 0.7), base=8)
    _clothes(rng, img, X, Y, pose, a, b, skin, tex)
    hsl, hair, hair_mask, long_hair = _hair(rng, img, X, Y, pose, a, b, tex)
    _blob(img, X, Y, pose, 0, b, a * rng.uniform(0.45, 0.6), b * 0.6, skin * rng.uniform(0.55, 0.8), soft=2)  # neck
    if not long_hair and rng.random() < 0.7:  # ears in front of short hair, behind the face
        ear_y, ear = b * rng.uniform(-0.15, 0.05), skin * rng.uniform(0.6, 0.9)
        for side in (s for s in (-1.0, 1.0) if s * yaw < 0.2):  # the far ear hides behind a turned head
            _blob(img, X, Y, pose, side * a * 0.98 - yaw * a * 0.3, ear_y, a * 0.14, b * 0.19, ear, soft=1.5)
    # face oval narrowing towards the chin, lit as an ellipsoid (Lambert + ambient)
    taper = rng.uniform(0.1, 0.3)
    fsl = _window(pose, 0, 0, b + 2 / size, size)  # b > a: the oval fits in its disc
    Xf, Yf = X[fsl], Y[fsl]
    xs = Xf * (1 / (1 - F(taper) * (Yf * F(1 / b)).clip(0, 1)))
    face_mask = _ellipse(xs, Yf, 0, 0, a, b, size, 1.5)
    lx, ly = rng.uniform(-0.75, 0.75), rng.uniform(-0.5, 0.3)
    nx, ny = (xs - F(yaw * a * 0.3)) * F(1 / a), Yf * F(1 / b)
    nz, amb, lz = np.sqrt((1 - nx * nx - ny * ny).clip(0, 1)), rng.uniform(0.2, 0.6), math.sqrt(1 - lx * lx - ly * ly)
    shade = F(amb) + F(1 - amb) * (F(lx) * nx + F(ly) * ny + F(lz) * nz).clip(0, 1)
    alb = F(skin) * (F(1) + F(rng.uniform(0.05, 0.18)) * tex)
    ey, ex, rx = _eyes(rng, alb, X, Y, pose, a, b, skin, yaw)
    _nose_mouth(rng, alb, X, Y, pose, a, b, ey, lx, yaw)
    img[fsl] += face_mask * (alb[fsl] * shade - img[fsl])
    # fringe: hair over the forehead down to a wavy hairline
    Xh = X[hsl]
    line = -b * rng.uniform(0.4, 0.75) + F(b * rng.uniform(0.1, 0.5)) * (Xh * F(1 / a)) ** 2
    line = line + F(b * rng.uniform(0, 0.12)) * _wave(Xh * F(rng.uniform(1.6, 6.4)) + F(rng.uniform(0, 1)))
    fringe = hair_mask * ((line - Y[hsl]) * F(size / 1.5) + F(0.5)).clip(0, 1)
    img[hsl] += fringe * (hair - img[hsl])
    if rng.random() < 0.25:
        _glasses(rng, img, X, Y, pose, ey, ex, rx, yaw * a * 0.3)
    if rng.random() < 0.1:  # a hat: a crown, its bottom hidden by the brim
        top, value, ry = -b * rng.uniform(0.45, 0.7), rng.uniform(0.05, 0.9), b * rng.uniform(0.35, 0.55)
        _blob(img, X, Y, pose, 0, top - ry * 0.8, a * rng.uniform(1.0, 1.2), ry, value, soft=1.5)
        _blob(img, X, Y, pose, 0, top, a * rng.uniform(1.1, 1.8), b * rng.uniform(0.05, 0.12), value * 0.8, soft=1.5)
    if rng.random() < 0.12:  # something out of focus between the camera and the face
        _blob(img, TX, TY, SCENE, (1 if rng.random() < 0.5 else -1) * rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7),
              rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3), rng.uniform(0.05, 0.9), soft=rng.uniform(3, 10))
    # light falling off across the frame, then exposure, contrast and a tone curve
    t, (gx, gy) = TX[0], rng.uniform(-0.5, 0.5, 2)
    img *= (F(1) + F(gx) * t)[None, :] + (F(gy) * t)[:, None]
    img = _blur(img, int(np.searchsorted((0.7, 0.95), rng.random(), "right")))  # 0-2 passes: 70/25/5 %
    contrast = rng.uniform(0.75, 1.25)
    img = (img * F(contrast) + F(0.5 - 0.5 * contrast + rng.uniform(-0.07, 0.07))).clip(0, 1)
    img += F(rng.uniform(-0.6, 0.6)) * img * (1 - img)  # > 0 brightens the mid-tones
    # uniform sensor noise: Gaussian draws would cost a quarter of the whole face
    img = img + F(rng.uniform(0.01, 0.06)) * (rng.random((size, size), dtype=F) - F(0.5))
    return np.rint(img.clip(0, 1) * F(255)).astype(np.uint8)


def face(index: int, seed: int = 0, size: int = 128) -> np.ndarray:
    """Face ``index`` of the sample with ``seed``: uint8 (size, size), independent of n."""
    return render_face(np.random.default_rng([seed, index]), size)


def generate(n: int, seed: int = 0, size: int = 128, progress: bool = False) -> np.ndarray:
    """Faces 0..n-1 of the sample with ``seed``: uint8 array (n, size, size)."""
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in progress_bar(range(n), show=progress, desc="faces"):
        out[i] = face(i, seed, size)
    return out
