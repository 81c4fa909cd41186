"""Decoding one image file into a (S, S) uint8 grayscale array: any common format, bit depth or mode.

16-bit images are scaled (not clipped), palette / CMYK / alpha are converted, EXIF rotation is
applied, non-square images are center-cropped, then resized with Pillow's bicubic filter. A
header claiming more than ``MAX_PIXELS`` pixels is refused before any pixel is decoded.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # decompression-bomb guard: bigger headers are skipped, never decoded


class BadImage(Exception):
    """A file that cannot be used as an image; the message is a short reason."""


def _gray_u8(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> mode 'L', mapping the full range of the source type to 0..255."""
    mode = im.mode
    if mode in ("L", "1", "LA", "La"):
        return im.convert("L")  # '1' becomes 0/255; alpha is dropped
    if mode in ("P", "PA"):
        return im.convert("RGBA").convert("L")  # via RGBA so palette transparency is handled
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        if mode == "F" and lo >= 0 and hi <= 1:
            scale_lo, scale_hi = 0.0, 1.0  # float images in [0, 1]
        elif lo >= 0 and hi <= 65535:
            scale_lo, scale_hi = 0.0, 65535.0  # 16-bit data (PNG, 16-bit PGM): scale, never clip
        else:
            scale_lo, scale_hi = lo, max(hi, lo + 1e-12)  # genuinely 32-bit data: stretch its range
        u8 = np.rint((a - scale_lo) * (255.0 / (scale_hi - scale_lo))).clip(0, 255).astype(np.uint8)
        return Image.fromarray(u8)
    return im.convert("RGB").convert("L")  # RGB(A), CMYK, YCbCr, LAB, HSV: ITU-R 601 luma


def _square(im: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square (faces keep their proportions), then resize to size x size.

    Bicubic with Pillow's built-in antialiasing when shrinking; an image that already has
    the right size is returned untouched (exact pixels kept).
    """
    w, h = im.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    return im


def decode_job(args: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    """A decode worker's job: (path, size) -> (image, None) or (None, reason). Here, not in ``data``, so that
    a worker process imports only this module (numpy and Pillow)."""
    try:
        return decode_image(args[0], args[1]), None
    except BadImage as e:
        return None, str(e)


def decode_image(path, size: int = 128) -> np.ndarray:
    """Decode one file to a (size, size) uint8 grayscale array.

    EXIF orientation is applied; 16-bit and float data are scaled (not clipped) to 0..255;
    non-square images are center-cropped; resizing is bicubic with antialiasing.

    Raises:
        BadImage: empty, truncated, unreadable, too small (< 8 px), or a header claiming
            more than ``MAX_PIXELS`` pixels (checked before any pixel is decoded).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadImage(f"header claims {w}x{h} pixels (decompression-bomb guard)")
                if w < 8 or h < 8:
                    raise BadImage(f"too small: {w}x{h}")
                im.load()  # decodes everything now, so truncation raises here
                im = _square(_gray_u8(ImageOps.exif_transpose(im)), size)
                return np.asarray(im, dtype=np.uint8).copy()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("header claims too many pixels (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (format not recognised)") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file, never a crash
        msg = str(e).splitlines()[0][:100] if str(e) else ""
        raise BadImage(f"cannot decode ({type(e).__name__}{': ' + msg if msg else ''})") from None
