"""Finding, decoding, caching and splitting face images.

Flow: ``find_images`` scans a folder (recursively, sorted) -> ``decode_image`` turns each
file into a (S, S) uint8 grayscale array (``decode.py``) -> ``load_images`` decodes all of them once on all
cores and caches the stack as one ``.npy`` that later runs memory-map -> ``split_indices``
gives the seeded train/val/test split -> ``to_float`` turns a uint8 batch into model input.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .config import DataConfig, check_fractions
from .decode import decode_job
from .parallel import WorkerPool
from .synthetic import GENERATOR, GENERATOR_VERSION  # what a sample's SAMPLE.json names
from .utils import UserError, atomic_path, progress_bar, read_json, write_json, write_text

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pnm", ".webp", ".tif", ".tiff")
REAL_DIR = Path("data/flickr")  # where the README tells users to put the Kaggle data
SAMPLE_DIR = Path("data/sample")  # the generated default sample
CACHE_DIR = Path("data/.cache")  # decoded uint8 caches (never inside the user's image folder)
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
SAMPLE_MARKER = "SAMPLE.json"  # written last by src.sample.write_sample
HOW_TO_GET_DATA = ('put the Kaggle Flickr-Faces thumbnails there (see README "Your own data") '
                   "or generate the sample with: python -m src data sample --out data/sample")


@dataclass
class Skipped:
    path: str  # relative posix path (or the folder) of the file that was not used
    reason: str  # short, human-readable


@dataclass
class FaceSet:
    images: np.ndarray  # (N, S, S) uint8, usually a read-only np.memmap
    files: list[str]  # relative posix paths, sorted, same order as images
    root: str
    skipped: list[Skipped] = field(default_factory=list)
    source: str = "folder"  # "real" | "sample" | "folder"

    def files_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.files).encode()).hexdigest()

    def fingerprint(self) -> str:
        """sha256 of the decoded images (shape and pixels), the same wherever the folder lies: launches
        and bundles of one study must agree on it (``merge`` refuses another)."""
        h = hashlib.sha256(repr(self.images.shape).encode())
        flat = np.ascontiguousarray(self.images).reshape(-1)
        chunk = 64 << 20
        for i in range(0, flat.size, chunk):
            h.update(flat[i:i + chunk])
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- scanning
def _walk(root: Path) -> Iterator[tuple[str, Path] | Skipped]:
    """Yield (relative posix path, path) of image files and Skipped entries, unsorted."""
    seen: set[str] = set()  # resolved folders already scanned, so symlink loops end

    def visit(folder: Path, rel: str, ancestors: frozenset[str]):
        real = os.path.realpath(folder)
        if real in seen:
            why = "directory symlink loop" if real in ancestors else "directory already scanned via another link"
            yield Skipped(rel or ".", why)
            return
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            yield Skipped(rel or ".", f"cannot list folder ({e.strerror or e})")
            return
        for entry in entries:
            name = entry.name
            if name.startswith("."):  # hidden files and folders (.git, .DS_Store, our cache)
                continue
            child = f"{rel}/{name}" if rel else name
            is_dir = entry.is_dir()  # follows symlinks; loops are caught by `seen`
            if not is_dir and not name.lower().endswith(IMAGE_EXTENSIONS):
                continue  # LICENSE.txt, README.md, ...
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes arrive as surrogate escapes
                shown = os.fsencode(child).decode("utf-8", "backslashreplace")
                yield Skipped(shown, "file name is not valid UTF-8")
                continue
            if is_dir:
                yield from visit(Path(entry.path), child, ancestors | {real})
            elif entry.is_file():
                yield child, Path(entry.path)
            elif entry.is_symlink():
                yield Skipped(child, "broken symlink")

    yield from visit(Path(root), "", frozenset())


def find_images(root) -> tuple[list[Path], list[Skipped]]:
    """Image files under ``root``, recursively, sorted by relative posix path.

    Extensions in ``IMAGE_EXTENSIONS`` match case-insensitively; other files and hidden
    (dot) names are ignored silently. File symlinks are followed; folder symlink loops,
    broken links and non-UTF-8 names are returned as ``Skipped``.
    """
    found, skipped = [], []
    for item in _walk(Path(root)):
        (skipped if isinstance(item, Skipped) else found).append(item)
    found.sort(key=lambda t: t[0])
    return [p for _, p in found], skipped


# ----------------------------------------------------------------------------- cache
def _cache_key(root: Path, size: int, stats: list[tuple[str, int, int]]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}\0{root.resolve()}\0{size}\0".encode("utf-8", "surrogateescape"))
    for rel, nbytes, mtime_ns in stats:
        h.update(f"{rel}\0{nbytes}\0{mtime_ns}\n".encode())
    return h.hexdigest()


def _crc32(a: np.ndarray, chunk: int = 64 << 20) -> int:
    flat = a.reshape(-1)  # C-contiguous, so every slice below is one buffer
    crc = 0
    for i in range(0, flat.size, chunk):
        crc = zlib.crc32(flat[i:i + chunk], crc)
    return crc


def _read_cache(npy: Path, meta_path: Path, key: str, size: int) -> tuple[np.ndarray, dict] | None:
    """The cached set, or None if absent; a damaged cache warns once and returns None."""
    if not meta_path.exists():
        return None  # no meta = never finished (the JSON is written last)
    try:
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise ValueError("key does not match")
        images = np.load(npy, mmap_mode="r", allow_pickle=False)
        shape = (len(meta["files"]), size, size)
        if images.dtype != np.uint8 or images.shape != shape or list(shape) != meta["shape"]:
            raise ValueError(f"array is {images.dtype}{images.shape}, expected uint8{shape}")
        if _crc32(images) != meta["crc32"]:
            raise ValueError("checksum mismatch")
    except Exception as e:  # noqa: BLE001 - whatever is wrong, the remedy is a rebuild
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        warnings.warn(f"cache {npy} is corrupt ({why}); rebuilding", UserWarning, stacklevel=3)
        return None
    return images, meta


def _write_cache(npy: Path, meta_path: Path, key: str, images: np.ndarray, files, skipped) -> None:
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, images, allow_pickle=False)  # a file object: np.save would append ".npy" to a name
    write_json(meta_path, {  # last: its presence marks the cache complete
        "key": key, "version": CACHE_VERSION, "n": len(files), "shape": list(images.shape),
        "files": files, "skipped": [[s.path, s.reason] for s in skipped],
        "crc32": _crc32(images), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


# ----------------------------------------------------------------------------- loading
def _decode_all(paths: list[Path], size: int, workers: int | None, progress: bool):
    """Yield (image | None, reason | None) in the order of ``paths``."""
    jobs = [(str(p), size) for p in paths]
    bar = progress_bar(show=progress, total=len(jobs), desc="decoding images", unit="img")
    with bar, WorkerPool(workers) as pool:
        for r in pool.map(decode_job, jobs):
            bar.update()
            yield r


def _report(root: Path, skipped: list[Skipped], strict: bool, listing: Path) -> None:
    """strict: raise on the first bad file; else one warning with the count and the first five, every
    skipped file with its reason in ``listing`` (a text file next to the decode cache, never in ``root``)."""
    if not skipped:
        return
    if strict:
        s = skipped[0]
        raise UserError(f"bad image {root / s.path}: {s.reason} (strict mode; fix or remove the file)")
    write_text(listing, "".join(f"{root / s.path}\t{s.reason}\n" for s in skipped))
    shown = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    n = f"{len(skipped)} bad file" + ("s" if len(skipped) > 1 else "")
    warnings.warn(f"skipped {n} in {root}: {shown}{more} (all listed in {listing}; to stop at the first bad "
                  "file instead: --strict, or reproduce --set data.strict=true)", UserWarning, stacklevel=3)


def load_images(root, size: int = 128, *, strict: bool = False, cache_dir=None, workers: int | None = None,
                progress: bool = True, limit: int | None = None) -> FaceSet:
    """Scan ``root``, decode every image once (all cores), and cache the stack.

    The cache is ``<cache_dir>/<key>.npy`` (+ ``.json`` meta), keyed by the resolved root,
    ``size``, the decoder version and each file's relative path, byte size and mtime; a
    later call memory-maps it read-only. Nothing is ever written inside ``root``.

    Returns:
        FaceSet with images (N, size, size) uint8, in sorted relative-path order.

    Raises:
        UserError: missing folder, no usable image, or (``strict``) any bad file.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no image folder at {root}; {HOW_TO_GET_DATA}")
    cache = Path(cache_dir if cache_dir is not None else CACHE_DIR)
    if cache.resolve().is_relative_to(root.resolve()):
        raise UserError(f"cache folder {cache} is inside the image folder {root}; pass a cache_dir outside it")
    paths, skipped = find_images(root)
    paths = paths[:limit] if limit is not None else paths
    stats, kept_paths = [], []
    for p in paths:
        rel = p.relative_to(root).as_posix()
        try:
            st = p.stat()
        except OSError as e:
            skipped.append(Skipped(rel, f"cannot stat ({e.strerror or e})"))
            continue
        stats.append((rel, st.st_size, st.st_mtime_ns))
        kept_paths.append(p)
    if not stats and not skipped:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {root}; {HOW_TO_GET_DATA}")
    key = _cache_key(root, size, stats)
    npy, meta_path = cache / f"{key[:16]}.npy", cache / f"{key[:16]}.json"
    hit = _read_cache(npy, meta_path, key, size)
    if hit is not None:
        images, meta = hit
        files = meta["files"]
        skipped += [Skipped(p, r) for p, r in meta["skipped"]]
    else:
        buf = np.empty((len(stats), size, size), np.uint8)
        files, bad = [], []
        for (rel, *_), (img, reason) in zip(stats, _decode_all(kept_paths, size, workers, progress)):
            if img is None:
                bad.append(Skipped(rel, reason))
            else:
                buf[len(files)] = img  # valid images packed at the front, in sorted order
                files.append(rel)
        if not files:
            raise UserError(f"no readable images in {root} ({len(skipped) + len(bad)} files skipped, "
                            f"first: {(skipped + bad)[0].path}: {(skipped + bad)[0].reason}); {HOW_TO_GET_DATA}")
        _write_cache(npy, meta_path, key, buf[:len(files)], files, bad)
        images = np.load(npy, mmap_mode="r", allow_pickle=False)
        skipped += bad
    _report(root, skipped, strict, cache / f"{key[:16]}.skipped.txt")  # after caching: a strict rerun after a fix reuses the work
    source = "sample" if (root / SAMPLE_MARKER).exists() else "folder"
    return FaceSet(images=images, files=list(files), root=str(root.resolve()), skipped=skipped, source=source)


def _has_images(root: Path) -> bool:
    return root.is_dir() and any(not isinstance(item, Skipped) for item in _walk(root))


def resolve_data_dir(cfg: DataConfig, *, log: Callable[[str], None] = print,
                     progress: bool = True) -> tuple[Path, str]:
    """Pick the image folder: ``cfg.root``, else the real dataset, else the generated sample.

    The sample is (re)generated by ``src.sample.write_sample`` when it is missing,
    incomplete, holds another number of faces than ``cfg.sample_size``, or its marker says
    an older generator version made it (write_sample replaces only its own files).
    Returns (folder, source) with source in "folder" | "sample" | "real".
    """
    if cfg.root is not None:
        root = Path(cfg.root)
        source = "sample" if (root / SAMPLE_MARKER).exists() else "folder"
        log(f"data: {'generated sample' if source == 'sample' else 'image folder'} {root}")
        return root, source
    if _has_images(REAL_DIR):
        log(f"data: real Flickr-Faces thumbnails in {REAL_DIR}")
        return REAL_DIR, "real"
    try:  # the marker holds the generator's parameters; it is written last
        marker = read_json(SAMPLE_DIR / SAMPLE_MARKER)
        made = marker.get("n")
    except (OSError, ValueError, AttributeError):
        marker, made = {}, None
    # only a marker that names this generator can be out of date (version 1 wrote none)
    version = marker.get("version", 1) if marker.get("generator") == GENERATOR else GENERATOR_VERSION
    if made == cfg.sample_size and version == GENERATOR_VERSION:
        log(f"data: generated sample of {made} faces in {SAMPLE_DIR} (no real dataset in {REAL_DIR})")
    else:
        from .sample import write_sample  # lazy: only needed when the sample is missing

        why = f"the sample in {SAMPLE_DIR} is from generator v{version}; " if made == cfg.sample_size else ""
        log(f"data: no real dataset in {REAL_DIR}; {why}generating {cfg.sample_size} synthetic faces "
            f"(generator v{GENERATOR_VERSION}) in {SAMPLE_DIR}")
        write_sample(SAMPLE_DIR, n=cfg.sample_size, seed=0, progress=progress, workers=os.cpu_count() or 1)
    return SAMPLE_DIR, "sample"


def load_dataset(cfg: DataConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> FaceSet:
    """``resolve_data_dir`` + ``load_images`` with the settings of ``cfg``."""
    root, source = resolve_data_dir(cfg, log=log, progress=progress)
    fs = load_images(root, cfg.image_size, strict=cfg.strict, cache_dir=cfg.cache_dir,
                     progress=progress, limit=cfg.limit)
    fs.source = source
    if cfg.n_images is not None and (len(fs.images), fs.files_sha256()) != (cfg.n_images, cfg.files_sha256):
        raise UserError(f"the image folder {fs.root} changed since these runs were trained: it held {cfg.n_images} "
                        f"images, now {len(fs.images)}" + ("" if len(fs.images) != cfg.n_images else
                        " with another file list") + "; restore it, or train again (the stored split would be wrong)")
    return fs


def resolved(cfg: DataConfig, faces: FaceSet) -> DataConfig:
    """``cfg`` pinned to the folder it loaded: absolute root, image count and file-list digest."""
    return replace(cfg, root=faces.root, n_images=len(faces.images), files_sha256=faces.files_sha256())


# ----------------------------------------------------------------------------- split, batches
def split_indices(n: int, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded train/val/test split of ``range(n)``.

    Sizes are ``n * fraction`` rounded by largest remainder (70,000 -> 49,000/7,000/14,000;
    10 -> 7/1/2), then each split with a positive fraction gets at least one index.
    The permutation is ``np.random.default_rng(seed).permutation(n)``: train is its first
    part, then val, then test. Each array is int64, sorted ascending (memory-map locality).
    """
    fr = np.array(check_fractions(fractions))
    need = int((fr > 0).sum())
    if n < max(need, 1):
        raise UserError(f"{n} images are too few to split {tuple(fr.tolist())}; need at least {need}")
    exact = n * fr
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    for i in np.flatnonzero((fr > 0) & (counts == 0)):  # take from the largest split
        counts[np.argmax(counts)] -= 1
        counts[i] += 1
    perm = np.random.default_rng(seed).permutation(n)
    a, b = counts[0], counts[0] + counts[1]
    return {name: np.sort(part).astype(np.int64) for name, part in
            zip(("train", "val", "test"), (perm[:a], perm[a:b], perm[b:]))}


EVAL_BATCH = 500  # images per evaluation batch; fixed, so that evaluation noise (drawn per batch) is the same for every run


def eval_batches(images_u8, device=None):
    """(N, S, S) uint8 images (array or tensor) as (B, 1, S, S) float32 batches in [0, 1] of ``EVAL_BATCH``,
    in order, moved to ``device`` (None: where they are): the one batched loop of every evaluation."""
    for start in range(0, len(images_u8), EVAL_BATCH):
        x = to_float(images_u8[start:start + EVAL_BATCH])
        yield x if device is None else x.to(device)


def to_float(batch_uint8):
    """(B, S, S) uint8 tensor (or array) -> (B, 1, S, S) float32 in [0, 1]."""
    import torch  # lazy: decoding workers never need torch

    if isinstance(batch_uint8, np.ndarray):
        batch_uint8 = torch.from_numpy(np.array(batch_uint8))  # copy: memmaps are read-only
    x = batch_uint8.to(torch.float32).div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x


# ----------------------------------------------------------------------------- the real dataset
KAGGLE_ID = "imcr00z/flickr-faces-70k-thumbnails-128x128"
MANUAL_STEPS = (f"download https://www.kaggle.com/datasets/{KAGGLE_ID} by hand, unzip it, and put the "
                "images (any layout) under data/flickr/")


def download(out: Path) -> int:
    """Fetch with kagglehub and link the download into ``out``; clear manual steps otherwise."""
    try:
        import kagglehub
    except ImportError:
        raise UserError(f"kagglehub is not installed (pip install kagglehub); or {MANUAL_STEPS}") from None
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_ID))
    except Exception as e:  # no credentials, no network, ...: kagglehub raises many types
        raise UserError(f"kagglehub could not download {KAGGLE_ID} ({type(e).__name__}: {e}); "
                        f"set Kaggle credentials, or {MANUAL_STEPS}") from None
    if out.exists():
        raise UserError(f"{out} already exists; the download is at {path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(path.resolve(), target_is_directory=True)
    print(f"dataset downloaded to {path}; linked as {out}")
    return 0
