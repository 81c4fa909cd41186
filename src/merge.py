"""Merging results bundles (pieces of one study) into one results folder.

A piece of the protocol (``reproduce --models ae --seeds 0, --bundle B``, see docs/gpu.md)
returns a weight-free bundle of its runs. ``merge(bundles, into)`` adds the runs of each bundle
to ``into`` (created if new), takes the baselines, rate-distortion curves and figure data, and
recomputes the summary. Bundles must be of one study: a bundle whose data fingerprint,
generator version, preset or training setting differs from ``into``'s (or the first bundle's)
is refused with one line naming the difference, before anything is written. A run already in
``into`` is kept as it is; the same run with other metrics in a later bundle is left out, and
said so in one line.
"""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .export import is_archive, marker_last
from .results import FIGURE_DATA, PCA_CURVE_JSON, RD_DIR, preset_of, read_metrics, read_pca_curves
from .utils import UserError, atomic_path, read_json, save_npz, write_json

PRESET_FIELDS = ("epochs", "batch_size", "image_size", "limit", "sample_size", "noise_sigma")

# (what the refusal calls it, how it is read from a bundle's grid.json)
MUST_MATCH: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("data fingerprint", lambda g: g.get("data_fingerprint")),
    ("generator version", lambda g: (g.get("generator") or {}).get("version")),
    ("generator settings", lambda g: {k: v for k, v in (g.get("generator") or {}).items() if k != "version"}),
    ("preset", lambda g: preset_of(g).get("name")),
    ("preset settings", lambda g: {k: preset_of(g).get(k) for k in PRESET_FIELDS}),
    ("training setting", lambda g: g.get("training")),
)


def difference(ref: dict, other: dict) -> str | None:
    """The first of ``MUST_MATCH`` on which two grid.json records differ, as "NAME A vs B"; None if none."""
    for name, read in MUST_MATCH:
        a, b = read(ref), read(other)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                a, b = ({k: d.get(k) for k in keys} for d in (a, b))
            return f"{name} {json.dumps(b, default=str)} vs {json.dumps(a, default=str)}"
    return None


def _open(path: Path, stack: ExitStack) -> Path:
    """The folder of a bundle (a ``.tar.gz`` is unpacked into a temp folder that ``stack`` removes)."""
    if is_archive(path):
        if not path.is_file():
            raise UserError(f"bundle {path} not found")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="merge-")))
        try:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")  # "data": no absolute paths, links out or devices
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"bundle {path} is not a readable .tar.gz ({e})") from None
        return tmp
    if not (path / "grid.json").is_file():
        raise UserError(f"{path} is not a results bundle (no grid.json); pass folders or .tar.gz files written by "
                        "reproduce --bundle or export")
    return path


def _grid(folder: Path, label: Path) -> dict:
    try:
        g = read_json(folder / "grid.json")
    except (OSError, ValueError) as e:
        raise UserError(f"{label}: grid.json unreadable ({e})") from None
    if not g.get("data_fingerprint"):
        raise UserError(f"{label} records no data fingerprint (made before bundles could be merged); "
                        "it cannot be checked against the others")
    return g


def _run_dirs(folder: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(folder.iterdir())
            if d.is_dir() and d.name != RD_DIR and read_metrics(d) is not None}


def merge(bundles: list[str | Path], into: str | Path, log=print) -> dict[str, Any]:
    """Merge ``bundles`` (folders or .tar.gz) into ``into``; returns the recomputed summary."""
    from .experiments import write_summary  # the one writer of summary.json / summary.csv

    into = Path(into)
    if into.exists() and not into.is_dir():
        raise UserError(f"--into {into} is a file, not a folder")
    has_target = into.is_dir() and (into / "grid.json").is_file()
    if into.is_dir() and any(into.iterdir()) and not has_target:
        raise UserError(f"--into {into} is a folder that holds no results (no grid.json); choose a new folder")
    with ExitStack() as stack:
        folders = [(Path(b), _open(Path(b), stack)) for b in bundles]
        grids = [(b, f, _grid(f, b)) for b, f in folders]
        ref_label, ref = (into, _grid(into, into)) if has_target else (grids[0][0], grids[0][2])
        for b, _, g in grids:
            why = difference(ref, g)
            if why:
                raise UserError(f"{b} is not of the same study as {ref_label}: {why}; nothing was merged")
        plan, kept = _plan_runs(into if has_target else None, [(b, f) for b, f, _ in grids], log)
        into.mkdir(parents=True, exist_ok=True)
        for name, src in plan.items():
            _copy_tree(src, into / name)
        _merge_extras(into, [f for _, f, _ in grids])
        seeds = sorted({int(read_json(into / n / "metrics.json")["seed"]) for n in _run_dirs(into)})
        grid = {**ref, "preset": {**preset_of(ref), "seeds": seeds},
                "merged_from": sorted({*ref.get("merged_from", []), *(str(b) for b, _, _ in grids)}),
                "devices": sorted({*ref.get("devices", [ref.get("device")]), *(g.get("device") for _, _, g in grids)}
                                  - {None})}
        write_json(into / "grid.json", grid)
        summary = write_summary(into)
    log(f"merge: {len(plan)} runs added, {kept} already there; {len(summary['runs'])} runs of seeds {seeds} "
        f"in {into}; next: python -m src report {into}")
    return summary


def _plan_runs(target: Path | None, bundles: list[tuple[Path, Path]], log) -> tuple[dict[str, Path], int]:
    """{run name: folder to copy}: each bundle's runs not yet in the target; and how many were there already."""
    have = {n: read_metrics(d) for n, d in (_run_dirs(target) if target else {}).items()}
    where = {n: target for n in have}
    plan: dict[str, Path] = {}
    kept = 0
    for label, folder in bundles:
        for name, d in _run_dirs(folder).items():
            m = read_metrics(d)
            if name not in have:
                have[name], where[name], plan[name] = m, label, d
            elif m == have[name]:
                kept += 1
            else:
                log(f"merge: {name} of {label} has other metrics than the one of {where[name]}; kept the first")
    return plan, kept


def _copy_tree(src: Path, dest: Path) -> None:
    files = [p.relative_to(src) for p in src.rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.suffix != ".pt"]
    for f in (src / f for f in sorted(files, key=marker_last)):
        with atomic_path(dest / f.relative_to(src)) as tmp:
            shutil.copyfile(f, tmp)


def _merge_extras(into: Path, folders: list[Path]) -> None:
    """Baselines (equal for equal data: the first found), rd/ (the last bundle that has one), figure data and
    PCA curves (keyed by data and split: every copy of a key holds the same curve)."""
    for name in ("baselines.json", "baselines.npz"):
        src = next((f / name for f in folders if (f / name).is_file()), None)
        if src is not None and not (into / name).is_file():
            with atomic_path(into / name) as tmp:
                shutil.copyfile(src, tmp)
    rd = [f / RD_DIR for f in folders if (f / RD_DIR / "index.json").is_file()]
    if rd:
        _copy_tree(rd[-1], into / RD_DIR)
    curves = {k: v for f in [*reversed(folders), into] for k, v in read_pca_curves(f).items()}  # into's first
    if curves:
        write_json(into / PCA_CURVE_JSON, {"curves": curves})
    parts = [p for p in [into / FIGURE_DATA, *(f / FIGURE_DATA for f in folders)] if p.is_file()]
    if parts:
        merge_figure_data(parts, into / FIGURE_DATA)


def merge_figure_data(paths: list[Path], dest: Path) -> Path:
    """One figure_data.npz from several: the arrays of those of the lowest seed (each run's own
    reconstructions; the shared test images; the VAE's arrays from the one that has them)."""
    loaded = []
    for p in paths:
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        loaded.append((json.loads(str(arrays.pop("index"))), arrays))
    seed = min(i["seed"] for i, _ in loaded)
    loaded = [(i, a) for i, a in loaded if i["seed"] == seed]
    index = next((i for i, _ in loaded if i.get("vae_run")), loaded[0][0])
    arrays: dict[str, np.ndarray] = {}
    for i, a in loaded:
        arrays.update({k: v for k, v in a.items() if not k.startswith("vae/") or i is index})
    return save_npz(dest, {**arrays, "index": np.array(json.dumps(index))})

