"""A weight-free results bundle: everything ``report`` needs to redraw figures and tables, no checkpoint.

``export(runs_dir, dest)`` copies the data files of a grid folder (JSON, CSV, npz, Markdown) and
leaves out weights (``*.pt``), locks and temp files. ``dest`` ending in ``.tar.gz`` / ``.tgz``
gives one archive (written to a temp file, then renamed); any other ``dest`` is a folder, for
example ``results/full-synthetic`` to commit. No file in a bundle may exceed ``MAX_FILE_BYTES``,
so a bundle can be shared or committed as it is.

``sync(runs_dir, dest)`` brings an existing bundle up to date with ``runs_dir``: a piece
(``reproduce --bundle DEST``) calls it each time a run is evaluated, so a piece stopped at the
device's time limit has already written every finished run.
"""
from __future__ import annotations

import filecmp
import shutil
import tarfile
from pathlib import Path

from .utils import UserError, atomic_path

DATA_SUFFIXES = (".json", ".csv", ".npz", ".md")
MAX_FILE_BYTES = 16 * 2**20  # 16 MiB


def bundle_files(runs_dir: str | Path) -> list[Path]:
    """The files of ``runs_dir`` that belong in a bundle, relative and sorted."""
    root = Path(runs_dir)
    if not (root / "summary.json").is_file():
        raise UserError(f"{root} holds no summary.json; export a folder written by: python -m src reproduce")
    files = sorted(p.relative_to(root) for p in root.rglob("*")
                   if p.is_file() and p.suffix in DATA_SUFFIXES and not p.name.startswith("."))
    big = [f"{f} ({(root / f).stat().st_size / 2**20:.1f} MiB)" for f in files
           if (root / f).stat().st_size > MAX_FILE_BYTES]
    if big:
        raise UserError(f"files over {MAX_FILE_BYTES // 2**20} MiB cannot go in a bundle: {', '.join(big)}")
    return files


def export(runs_dir: str | Path, dest: str | Path) -> list[Path]:
    """Write the bundle of ``runs_dir`` to ``dest`` (a ``.tar.gz`` archive or a folder); return its files."""
    root, dest = Path(runs_dir), Path(dest)
    files = bundle_files(root)
    if dest.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{dest} is inside {root}; export to a path outside the runs folder")
    if dest.name.endswith((".tar.gz", ".tgz")):
        with atomic_path(dest) as tmp, tarfile.open(tmp, "w:gz") as tar:
            for f in files:
                tar.add(root / f, arcname=f.as_posix())
        return files
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"{dest} is not empty; export into a new folder (nothing was written)")
    for f in files:
        with atomic_path(dest / f) as tmp:
            shutil.copyfile(root / f, tmp)
    return files


MARKERS = ("metrics.json", "summary.json")  # what marks a run, then the whole folder, complete


def marker_last(f: Path) -> tuple[int, str]:
    """Sort key copying a folder's files with the markers last: a run that looks finished is complete."""
    return (MARKERS.index(f.name) + 1 if f.name in MARKERS else 0, f.as_posix())


def is_archive(dest: str | Path) -> bool:
    return Path(dest).name.endswith((".tar.gz", ".tgz"))


def sync(runs_dir: str | Path, dest: str | Path) -> list[Path]:
    """Make ``dest`` (a folder or ``.tar.gz``) hold the bundle of ``runs_dir`` as it is now.

    A folder gets the files that are new or changed (each written atomically; nothing is deleted);
    an archive is rewritten whole, through a temp file. Returns the bundle's files.
    """
    root, dest = Path(runs_dir), Path(dest)
    check_dest(root, dest)
    files = bundle_files(root)
    if is_archive(dest):
        with atomic_path(dest) as tmp, tarfile.open(tmp, "w:gz") as tar:
            for f in files:
                tar.add(root / f, arcname=f.as_posix())
        return files
    for f in sorted(files, key=marker_last):  # a run's metrics.json marks it finished: it lands after the rest
        if not (dest / f).is_file() or not filecmp.cmp(root / f, dest / f, shallow=False):
            with atomic_path(dest / f) as tmp:
                shutil.copyfile(root / f, tmp)
    return files


def check_dest(runs_dir: str | Path, dest: str | Path, flag: str = "--bundle") -> None:
    """A bundle that ``sync`` may write: outside the runs folder, and a new folder, a bundle or an archive."""
    root, dest = Path(runs_dir), Path(dest)
    if dest.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{flag} {dest} is inside {root}; choose a path outside the runs folder")
    if is_archive(dest):
        if dest.is_dir():
            raise UserError(f"{flag} {dest} is a folder; an archive name must be a file")
    elif dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / "grid.json").is_file())):
        raise UserError(f"{flag} {dest} exists and is not a bundle (no grid.json); choose a new folder")
