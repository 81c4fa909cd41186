"""The ETA of a study, and the progress log that measures its error afterwards.

The seconds left are summed over the work left: each unfinished run's epochs and the rest of its
work (set-up, checkpoints, evaluation), then what follows the grid (``After``): the analysis presets'
noise sweep and parameter sweeps, or the other presets' rate-distortion step (its extra trainings and
the coding of its points), then the report. Each part is its cost (images x pixels x
``MODEL_COST``) times a rate in seconds per unit of cost, calibrated per model on what the store has
timed already: every epoch's ``seconds`` in ``history.csv`` and every finished run's wall time
(``config.json`` is written when its training starts, ``metrics.json`` when its evaluation ends). A
model not timed yet borrows the other model's rate (the costs carry the ratio between models).

Every grid progress line is appended to ``OUT/progress.log`` as a JSON line
``{"event": "start" | "progress" | "end", "t": unix seconds, "eta_s": seconds or null, "what"}``;
``benchmarks/eta_error.py OUT`` compares each ETA with the time that was actually left.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from .config import RDConfig, RunConfig
from .results import NOISE_JSON, read_history

PROGRESS_LOG = "progress.log"
REPORT_S = 10.0  # the report after the study (figure data, figures, tables), 2-core CPU, 2026-12-01: 6-9 s for the
# quick preset, 10 s for the analysis preset (benchmarks/RESULTS.md)


@dataclass(frozen=True)
class After:
    """What follows a grid in the study, for its ETA, and what else has been timed.

    An analysis preset's grid is followed by the noise sweep of each of its runs (``noise_sweep``) and by
    the parameter sweeps' runs (``sweeps``: run folder relative to the grid's, config); another preset's by
    the rate-distortion sweep ``rd`` (None: none). The report comes last. ``timed``: finished runs (folder,
    config) that calibrate the rates besides the grid's own, e.g. the grid's runs for the ETA of the sweeps;
    ``log_dir``: the folder whose ``progress.log`` gets the progress lines (None: the grid's own), so that the
    sweeps' lines join their study's.
    """
    rd: RDConfig | None = None
    report: bool = True
    noise_sweep: bool = False
    sweeps: tuple[tuple[str, RunConfig], ...] = ()
    timed: tuple[tuple[Path, RunConfig], ...] = ()
    log_dir: Path | None = None

# Relative time per training image of one pixel, at equal image size: the prior between models until
# both are timed (and the balance of the split among torchrun ranks). benchmarks/RESULTS.md, CPU fit at
# 128x128: AE 687, VAE 629 images/s; whole quick-preset runs (evaluation and 200 MB checkpoints
# included), issue #23: a VAE run costs 2-3x an AE run.
MODEL_COST = {"ae": 1.0, "vae": 2.0}


def _pixels(cfg: RunConfig) -> float:
    return float(cfg.model.image_size ** 2) * MODEL_COST.get(cfg.model.name, 1.0)


def _images(cfg: RunConfig, n_images: int | None = None) -> tuple[float, float]:
    """(train images, val + test images) of a run."""
    n = n_images if n_images is not None else (cfg.data.n_images or cfg.data.limit or 0)
    train, val, test = cfg.data.split
    return train * n, (val + test) * n


def epoch_cost(cfg: RunConfig, n_images: int | None = None) -> float:
    """Cost of one training epoch (and its validation pass): train images x pixels x ``MODEL_COST``."""
    return _images(cfg, n_images)[0] * _pixels(cfg)


def other_cost(cfg: RunConfig, n_images: int | None = None) -> float:
    """Cost of what a run does besides its epochs, dominated by evaluating val + test images."""
    return _images(cfg, n_images)[1] * _pixels(cfg)


def run_cost(cfg: RunConfig, n_images: int, epochs_left: int) -> float:
    """Images a run still processes (training epochs left, then one pass of val + test under the
    conditions, about as costly per image as a training step) x pixels x ``MODEL_COST``."""
    return epochs_left * epoch_cost(cfg, n_images) + other_cost(cfg, n_images)


def noise_cost(cfg: RunConfig, n_images: int | None = None) -> float:
    """Cost of a run's noise sweep (``sweeps.noise_sweep``): its test images x pixels x ``MODEL_COST``."""
    _, val_test = _images(cfg, n_images)
    val, test = cfg.data.split[1:]
    return val_test * test / (val + test) * _pixels(cfg)


class Calibration:
    """Seconds per unit of cost, per model: of an epoch (``epoch_rate``), of the rest of a run (``other_rate``)
    and of a run's noise sweep (``noise_rate``, from the ``seconds`` its ``noise_sweep.json`` records)."""

    def __init__(self) -> None:
        self.epoch: dict[str, list[float]] = {}
        self.other: dict[str, list[float]] = {}
        self.noise: dict[str, list[float]] = {}

    @classmethod
    def from_runs(cls, runs: Iterable[tuple[Path, RunConfig]]) -> "Calibration":
        """From the run folders given (those without a readable history are skipped)."""
        cal = cls()
        for run_dir, cfg in runs:
            try:
                history = read_history(run_dir)
            except (OSError, ValueError):
                continue
            seconds = [r["seconds"] for r in history if r.get("seconds")]
            if not epoch_cost(cfg) or not other_cost(cfg):  # a config without its image count says nothing
                continue
            if seconds:
                cal.epoch.setdefault(cfg.model.name, []).append(statistics.median(seconds) / epoch_cost(cfg))
            try:  # a run trained and evaluated in one go; a resumed one has a younger config.json
                wall = (run_dir / "metrics.json").stat().st_mtime - (run_dir / "config.json").stat().st_mtime
            except OSError:
                continue
            if seconds and wall > sum(seconds):
                cal.other.setdefault(cfg.model.name, []).append((wall - sum(seconds)) / other_cost(cfg))
            try:
                swept = json.loads((run_dir / NOISE_JSON).read_text(encoding="utf-8")).get("seconds")
            except (OSError, ValueError, AttributeError):
                swept = None
            if isinstance(swept, (int, float)) and swept > 0:
                cal.noise.setdefault(cfg.model.name, []).append(swept / noise_cost(cfg))
        return cal

    @staticmethod
    def _rate(rates: dict[str, list[float]], model: str) -> float | None:
        if rates.get(model):
            return statistics.median(rates[model])
        known = [statistics.median(v) for v in rates.values() if v]
        return statistics.median(known) if known else None

    def epoch_rate(self, model: str) -> float | None:
        return self._rate(self.epoch, model)

    def other_rate(self, model: str) -> float | None:
        """The rest of a run; before any run has finished, 0 (only the epochs are counted)."""
        return self._rate(self.other, model) or (0.0 if self.epoch_rate(model) is not None else None)

    def noise_rate(self, model: str) -> float | None:
        """A run's noise sweep; None before one is timed."""
        return self._rate(self.noise, model)


def run_seconds(cal: Calibration, cfg: RunConfig, epochs_left: int, evaluate: bool = True) -> float | None:
    """Seconds one run still needs; None before any epoch is timed."""
    e, o = cal.epoch_rate(cfg.model.name), cal.other_rate(cfg.model.name)
    if e is None or o is None:
        return None
    return epochs_left * e * epoch_cost(cfg) + (o * other_cost(cfg) if evaluate else 0.0)


RD_MODELS = "rd/models"  # where rd.run_rd trains its extra latent sizes, in the grid folder


def rd_trainings(rd: RDConfig, configs: Iterable[RunConfig]) -> dict[str, RunConfig]:
    """{folder under ``RD_MODELS``: config} of the extra latent sizes ``rd.run_rd`` trains: of the
    clean-trained, unregularized run of each model (lowest seed) among ``configs``, as
    ``experiments.train_latent_variant`` makes them."""
    base: dict[str, RunConfig] = {}
    for c in configs:
        if c.reg.kind == "none" and c.train.noise_train == 0 and (c.model.name not in base
                                                                  or c.train.seed < base[c.model.name].train.seed):
            base[c.model.name] = c
    out = {}
    for m, c in base.items():
        key = "ae_latent" if m == "ae" else "vae_latent"
        for v in (rd.ae_latents if m == "ae" else rd.vae_latents):
            out[f"{m}-latent{v}"] = replace(c, model=replace(c.model, **{key: v}))
    return out


def rd_points(rd: RDConfig, models: int) -> int:
    """Points the sweep codes and scores: the models' and extra sizes' bit depths, PCA's (k, b), the codecs'."""
    return ((models + len(rd.ae_latents) + len(rd.vae_latents)) * len(rd.bits) + len(rd.pca_k) * len(rd.bits)
            + len(rd.jpeg) + len(rd.webp) + len(rd.jpeg2000))


def after_seconds(cal: Calibration, after: After | None, runs: list[tuple[Path, RunConfig]], out: Path) -> float | None:
    """Seconds of what follows the grid ``runs`` ((folder, config) each) in ``out``; None while a rate it
    needs is not timed yet. The parts: ``noise_sweep_seconds``, ``sweeps_seconds``, ``rd_seconds``, the
    report (``REPORT_S``)."""
    if after is None or not runs:
        return 0.0
    parts = [noise_sweep_seconds(cal, runs) if after.noise_sweep else 0.0,
             sweeps_seconds(cal, after.sweeps, runs[0][1], out),
             rd_seconds(cal, after.rd, [c for _, c in runs], out)]
    return None if None in parts else sum(parts) + (REPORT_S if after.report else 0.0)


def noise_sweep_seconds(cal: Calibration, runs: list[tuple[Path, RunConfig]]) -> float | None:
    """The noise sweep of every run of ``runs`` without its ``noise_sweep.json``, at the rate of the noise sweeps
    timed so far; before the first, each is counted as long as the rest of its run (its evaluation, diagnostics
    and set-up): the CPU analysis preset's took 0.8-1.4x that (benchmarks/RESULTS.md)."""
    total = 0.0
    for run_dir, c in runs:
        if (Path(run_dir) / NOISE_JSON).exists():
            continue
        noise, other = cal.noise_rate(c.model.name), cal.other_rate(c.model.name)
        if noise is None and other is None:
            return None
        total += noise * noise_cost(c) if noise is not None else other * other_cost(c)
    return total


def sweeps_seconds(cal: Calibration, sweeps: tuple[tuple[str, RunConfig], ...], grid: RunConfig,
                   out: Path) -> float | None:
    """The parameter sweeps' runs not finished in ``out``: their epochs left and their evaluation. They train
    on the grid's data, so they are costed with the grid run ``grid``'s image count."""
    total = 0.0
    for rel, c in sweeps:
        run_dir = Path(out) / rel
        if (run_dir / "metrics.json").exists():
            continue
        c = replace(c, data=grid.data)
        s = run_seconds(cal, c, epochs_left(run_dir, c))
        if s is None:
            return None
        total += s
    return total


def epochs_left(run_dir: Path, cfg: RunConfig) -> int:
    """Epochs a run has still to train: history.csv has a row per epoch done (resuming may redo a few)."""
    try:
        return max(cfg.train.epochs - len(read_history(run_dir)), 0)
    except (OSError, ValueError):
        return cfg.train.epochs


def rd_seconds(cal: Calibration, rd: RDConfig | None, configs: list[RunConfig], out: Path) -> float | None:
    """The rate-distortion step (None: none): the epochs its extra trainings have left, then the coding of its
    points, each one pass over the test images costed like one evaluation condition."""
    if rd is None:
        return 0.0
    total = 0.0
    for key, c in rd_trainings(rd, configs).items():
        s = run_seconds(cal, c, epochs_left(out / RD_MODELS / key, c), evaluate=False)
        if s is None:
            return None
        total += s
    c = configs[0]
    rate = statistics.mean(r for r in (cal.other_rate(m) for m in MODEL_COST) if r is not None) \
        if any(cal.other_rate(m) is not None for m in MODEL_COST) else None
    if rate is None:
        return None
    _, val_test = _images(c)
    n_test = val_test * c.data.split[2] / (c.data.split[1] + c.data.split[2])
    n_test = min(n_test, rd.max_images or math.inf)
    per_point = n_test * c.model.image_size ** 2 * rate / 2  # other_cost covers 2 conditions x (val + test)
    return total + rd_points(rd, len({x.model.name for x in configs})) * per_point


def rd_progress(out: Path, rd: RDConfig, runs: list[tuple[Path, RunConfig]], what: str) -> float | None:
    """Log (``log_event``) and return the seconds the rate-distortion step of the grid runs ``runs`` (and the
    report after it) has left."""
    left = after_seconds(Calibration.from_runs(runs), After(rd), runs, out)
    log_event(out, "progress", left, what)
    return left


def clock(seconds: float) -> str:
    """"1:02:03" or "2:03"."""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def log_event(out: str | os.PathLike, event: str, eta_s: float | None = None, what: str = "") -> None:
    """Append one line to ``out/progress.log`` (a line is one write: lines of several processes do not mix)."""
    line = json.dumps({"event": event, "t": round(time.time(), 3), "eta_s": None if eta_s is None else round(eta_s, 1),
                       "what": what}) + "\n"
    path = Path(out) / PROGRESS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def read_events(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of ``out/progress.log`` of its last launch: from its last "start" to the "end" after it."""
    rows = [json.loads(line) for line in (Path(out) / PROGRESS_LOG).read_text(encoding="utf-8").splitlines() if line]
    starts = [i for i, r in enumerate(rows) if r["event"] == "start"]
    rows = rows[starts[-1]:] if starts else rows
    ends = [i for i, r in enumerate(rows) if r["event"] == "end"]
    return rows[:ends[0] + 1] if ends else rows
