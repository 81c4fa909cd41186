"""Real byte counts of one image: latent quantization and lossless coding, and Pillow's image codecs.

A latent (the AE feature map, the VAE's mu, PCA coefficients) becomes a byte string in
three steps, and the bytes are what ``bpp`` counts:

1. **Quantize** uniformly with ``bits`` bits *per image*: offset = min(z), step =
   (max(z) - min(z)) / (2**bits - 1), q = round((z - offset) / step). The offset and
   step are stored in the byte string as two float32 (8 bytes per image, counted).
2. **Code** q losslessly with one of ``CODERS``: "packed" (exactly ``bits`` bits per
   value, no entropy coding), "zlib" (raw deflate, level 9) or "lzma" (raw LZMA2) of the
   symbols as bytes; "auto" tries all three and keeps the shortest.
3. **Frame**: one tag byte (which coder) + offset + step + payload. The latent shape and
   ``bits`` are part of the model (known to the decoder), so they are not stored.

``decode_latent(encode_latent(z, b), shape, b)`` equals ``dequantize(quantize(z, b))``
exactly, and differs from z by at most step / 2 per value.

The image codecs (JPEG, WebP, JPEG 2000) go through Pillow; their rate is the length of
the encoded buffer, headers included. PCA (``pca.PCA``) codes its coefficients through the same
latent path. numpy and Pillow only: ``rd`` runs ``latent_job`` and ``codec_job`` in worker processes
(``parallel.WorkerPool``), which start without torch.
"""
from __future__ import annotations

import io
import lzma
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

from .config import LATENT_CODERS
from .utils import UserError

# ---------------------------------------------------------------- rate

def bpp(n_bytes: float, pixels: int) -> float:
    """Bits per pixel of ``n_bytes`` for an image of ``pixels`` pixels (128 x 128 = 16,384)."""
    return 8.0 * n_bytes / pixels


# ---------------------------------------------------------------- uniform quantization

MAX_BITS = 16
HEADER = struct.Struct("<Bff")  # coder tag, offset, step: 9 bytes per image


@dataclass(frozen=True)
class Quantized:
    q: np.ndarray          # integer symbols in [0, 2**bits - 1], same shape as the latent
    offset: np.float32     # value of symbol 0
    step: np.float32       # quantization step (> 0)
    bits: int


def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise UserError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
    return int(bits)


def quantize(z: np.ndarray, bits: int) -> Quantized:
    """Uniform ``bits``-bit quantization of one latent with its own min/max (per image)."""
    bits = _check_bits(bits)
    z = np.asarray(z, dtype=np.float32)
    if not np.all(np.isfinite(z)):
        raise ValueError("cannot quantize a latent with NaN or inf values")
    levels = (1 << bits) - 1
    offset = np.float32(z.min())
    step = np.float32((np.float64(z.max()) - np.float64(offset)) / levels)
    if step <= 0 or not np.isfinite(step):  # constant latent: any step reproduces it
        step = np.float32(1.0)
    q = np.rint((z.astype(np.float64) - offset) / step).clip(0, levels)
    return Quantized(q.astype(np.uint16 if bits > 8 else np.uint8), offset, step, bits)


def dequantize(qz: Quantized) -> np.ndarray:
    """float32 reconstruction offset + q * step, computed in float64 (the decoder runs this too)."""
    return (np.float64(qz.offset) + qz.q.astype(np.float64) * np.float64(qz.step)).astype(np.float32)


# ---------------------------------------------------------------- lossless coding of the symbols

CODERS = LATENT_CODERS
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 1 << 16}]  # small dict: latents are small


def _symbol_bytes(q: np.ndarray, bits: int) -> bytes:
    """One byte per symbol for bits <= 8; else two byte planes (all high bytes, then all low)."""
    flat = q.ravel()
    if bits <= 8:
        return flat.astype(np.uint8).tobytes()
    return (flat >> 8).astype(np.uint8).tobytes() + (flat & 0xFF).astype(np.uint8).tobytes()


def _from_symbol_bytes(data: bytes, n: int, bits: int) -> np.ndarray:
    a = np.frombuffer(data, dtype=np.uint8)
    if bits <= 8:
        return a[:n].astype(np.uint16)
    return (a[:n].astype(np.uint16) << 8) | a[n:2 * n].astype(np.uint16)


def _pack(q: np.ndarray, bits: int) -> bytes:
    """Exactly ``bits`` bits per value, most significant first, zero-padded to a byte."""
    flat = q.ravel().astype(np.uint16)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
    return np.packbits(((flat[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def _unpack(data: bytes, n: int, bits: int) -> np.ndarray:
    b = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n * bits).reshape(n, bits)
    return (b.astype(np.uint16) << np.arange(bits - 1, -1, -1, dtype=np.uint16)).sum(1, dtype=np.uint16)


def _compress(coder: str, q: np.ndarray, bits: int) -> bytes:
    if coder == "packed":
        return _pack(q, bits)
    raw = _symbol_bytes(q, bits)
    if coder == "zlib":
        c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib header or checksum
        return c.compress(raw) + c.flush()
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def _decompress(coder: str, payload: bytes, n: int, bits: int) -> np.ndarray:
    if coder == "packed":
        return _unpack(payload, n, bits)
    if coder == "zlib":
        raw = zlib.decompress(payload, -15)
    else:
        raw = lzma.decompress(payload, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return _from_symbol_bytes(raw, n, bits)


def encode_latent(z: np.ndarray, bits: int, coder: str = "auto") -> bytes:
    """One image's latent -> its byte string (tag + offset + step + payload, all counted).

    Args:
        z: the latent of one image, any shape (e.g. (4, 32, 32) or (200,)), float.
        bits: bits per value, 1..16.
        coder: one of ``CODERS``, or "auto" for the shortest of them.
    """
    if coder != "auto" and coder not in CODERS:
        raise UserError(f"unknown coder {coder!r}; choose one of {CODERS + ('auto',)}")
    qz = quantize(z, bits)
    candidates = CODERS if coder == "auto" else (coder,)
    payloads = [(len(p), i, p) for i, p in ((CODERS.index(c), _compress(c, qz.q, qz.bits)) for c in candidates)]
    _, tag, payload = min(payloads)
    return HEADER.pack(tag, qz.offset, qz.step) + payload


def decode_latent(data: bytes, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """Byte string of ``encode_latent`` -> float32 latent of ``shape`` (= dequantize(quantize(z)))."""
    bits = _check_bits(bits)
    tag, offset, step = HEADER.unpack_from(data)
    n = int(np.prod(shape))
    q = _decompress(CODERS[tag], data[HEADER.size:], n, bits).reshape(shape)
    return dequantize(Quantized(q, np.float32(offset), np.float32(step), bits))


# ---------------------------------------------------------------- image codecs (Pillow)

CODECS = {  # name: (Pillow format, keyword that carries the sweep value, fixed options)
    "jpeg": ("JPEG", "quality", {"optimize": True}),              # optimized Huffman tables
    "webp": ("WEBP", "quality", {"method": 6}),                   # slowest = smallest
    # raw J2K codestream (no JP2 box); the setting is a compression ratio, quality_layers=[ratio]
    "jpeg2000": ("JPEG2000", "rate", {"quality_mode": "rates", "irreversible": True, "no_jp2": True}),
}


def codec_available(name: str) -> bool:
    return features.check({"jpeg": "jpg", "webp": "webp", "jpeg2000": "jpg_2000"}[name])


def codec_encode(image_u8: np.ndarray, codec: str, setting: float) -> bytes:
    """One (S, S) uint8 grayscale image -> the codec's file bytes.

    ``setting`` is the JPEG / WebP quality (0-100) or the JPEG 2000 compression ratio
    (raw bytes / target bytes; Pillow's ``quality_mode="rates"``).
    """
    if codec not in CODECS:
        raise UserError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    if not codec_available(codec):
        raise UserError(f"this Pillow build cannot write {codec} (see PIL.features.pilinfo())")
    fmt, key, options = CODECS[codec]
    kw = {**options, **({"quality_layers": [float(setting)]} if key == "rate" else {"quality": int(setting)})}
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_u8, dtype=np.uint8), mode="L").save(buf, fmt, **kw)
    return buf.getvalue()


def codec_decode(data: bytes) -> np.ndarray:
    """Codec bytes -> (S, S) uint8 grayscale (WebP decodes to RGB; Pillow's L conversion)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"))


# ---------------------------------------------------------------- worker jobs (rd)

def latent_job(args: tuple[np.ndarray, int, str]) -> tuple[int, np.ndarray]:
    """(latent, bits, coder) -> (bytes of its code, the latent decoded from them)."""
    z, bits, coder = args
    blob = encode_latent(z, bits, coder)
    return len(blob), decode_latent(blob, z.shape, bits)


def codec_job(args: tuple[np.ndarray, str, float]) -> tuple[int, np.ndarray]:
    """((S, S) uint8 image, codec, setting) -> (bytes of its file, the image decoded from them)."""
    image, codec, setting = args
    blob = codec_encode(image, codec, setting)
    return len(blob), codec_decode(blob)
