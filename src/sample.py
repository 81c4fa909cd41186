"""The embedded default dataset on disk: faces of ``src.synthetic`` written as PNG files.

Layout as the FFHQ thumbnails (``root/00000/00000.png`` ...). ``SAMPLE.json`` is written last
and names the generator, its version and the parameters, so a complete sample is reused, an
interrupted one resumed, and one of ours with other parameters (or an older generator) replaced;
a folder holding anything else is never touched.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from PIL import Image

from .synthetic import GENERATOR, GENERATOR_VERSION, face
from .utils import UserError, atomic_path, progress_bar, read_json, write_json

MARKER = "SAMPLE.json"  # written last: its presence means the sample is complete
PARTIAL = ".SAMPLE.partial.json"  # written first: claims the folder while writing
POOL_MIN = 256  # fewer faces than this render faster here than a process pool starts


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


def _png(args: tuple[int, int, int]) -> bytes:
    """The PNG file of face ``index`` (a worker's job)."""
    index, seed, size = args
    buf = io.BytesIO()
    Image.fromarray(face(index, seed, size)).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def _pool(workers: int, jobs: int):
    """A process pool for ``workers`` > 1 and enough jobs to pay for it, else None (render here)."""
    if workers <= 1 or jobs < POOL_MIN:
        yield None
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:  # spawn: safe next to torch threads
        yield pool


def write_sample(out_dir: str | os.PathLike, n: int = 2000, seed: int = 0, size: int = 128,
                 progress: bool = True, workers: int = 1) -> list[Path]:
    """Write faces 0..n-1 as PNGs in the FFHQ layout under ``out_dir``; return their paths.

    Same parameters give byte-identical files. ``SAMPLE.json`` (parameters and
    ``GENERATOR_VERSION``) is written last and marks the sample complete; a complete sample
    with the same parameters is left as it is, an interrupted one is resumed, and one with
    other parameters or made by another generator version is replaced.

    Raises:
        UserError: ``out_dir`` holds anything but a sample made by this generator (the
            folder is then left untouched: user data is never overwritten or deleted).
    """
    out = Path(out_dir)
    params = {"generator": GENERATOR, "version": GENERATOR_VERSION, "n": n, "seed": seed, "size": size}
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
    todo = [i for i, path in enumerate(paths) if not (path in keep and path.is_file())]
    with _pool(workers, len(todo)) as pool:  # faces are independent: rendered on all workers, written here
        jobs = [(i, seed, size) for i in todo]
        pngs = pool.imap(_png, jobs, chunksize=32) if pool else map(_png, jobs)
        for i, data in progress_bar(zip(todo, pngs), show=progress, total=len(todo), desc="writing faces"):
            with atomic_path(paths[i]) as tmp:
                tmp.write_bytes(data)
    for d in out.iterdir():  # folders emptied of a larger previous sample
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    write_json(out / MARKER, params)
    (out / PARTIAL).unlink()
    return paths
