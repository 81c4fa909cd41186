"""A piece of the protocol: its time budget and its bundle, written as each run finishes.

GPU time comes in commands of at most 10 minutes, so the protocol runs in pieces (one model's
runs of one seed, docs/gpu.md): ``reproduce --models ae --seeds 0, --budget-s 540 --bundle B``.
``Piece`` carries what such a command adds to ``run_grid``: the ``budget.Budget`` that admits
work, and ``on_done``, which rewrites the summary and syncs the weight-free bundle (``export.sync``)
the moment a run is evaluated, so a piece stopped at the limit still returns every finished run.
SIGTERM (what ``timeout`` sends) stops it like Ctrl-C: finished runs stay, in the run folder and
in the bundle.
"""
from __future__ import annotations

import argparse
import fnmatch
import signal
import threading
from pathlib import Path
from typing import Callable

from .budget import Budget, parse_models, parse_seeds
from .export import check_dest, sync
from .utils import UserError


def _seconds(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return parse_seeds(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--seeds ", "", 1)) from None


def _models(text: str) -> tuple[str, ...]:
    from .config import MODEL_NAMES

    try:
        return parse_models(text, MODEL_NAMES)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--models ", "", 1)) from None


_seconds.__name__ = "number"  # argparse names the type in "invalid ... value" errors
_seeds.__name__, _models.__name__ = "seeds", "models"


def add_piece_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``reproduce`` that restrict the grid to a piece, budget it and bundle it as it goes."""
    p.add_argument("--seeds", type=_seeds, default=None, metavar="N|LIST",
                   help="a count (3: seeds 0, 1, 2) or a list (1,2; one seed alone: 2,) (default: the preset's)")
    p.add_argument("--models", type=_models, default=("ae", "vae"), metavar="ae|vae|ae,vae",
                   help="the models of the grid to run (default: both)")
    p.add_argument("--runs", action="append", default=None, metavar="PATTERN",
                   help="only the runs whose name matches, e.g. '*-none-clean-*' (repeatable; default: all)")
    p.add_argument("--budget-s", type=_seconds, default=None, metavar="S",
                   help="time budget: work that cannot finish within S seconds is not started (default: none)")
    p.add_argument("--images-per-s", type=_seconds, default=None, metavar="R",
                   help="training images/s to plan with until a rate is measured (default: measured)")
    p.add_argument("--bundle", default=None, metavar="DEST",
                   help="write each finished run's weight-free files to DEST (a folder, or .tar.gz) at once")


def run_filter(patterns: list[str] | None) -> Callable[[str], bool] | None:
    """``--runs``: a predicate keeping run names that match any shell pattern ("*-none-clean-*"); None = all."""
    if not patterns:
        return None
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Piece:
    """The budget (None: no limit) and the bundle (None: none) of one ``reproduce``."""

    def __init__(self, out: Path, bundle: str | Path | None, budget_s: float | None,
                 images_per_s: float | None, log=print) -> None:
        self.out, self.bundle, self.log = Path(out), Path(bundle) if bundle else None, log
        self.budget = Budget(budget_s, images_per_s) if budget_s is not None or images_per_s is not None else None
        if self.bundle is not None:
            check_dest(self.out, self.bundle, "--bundle")  # before any work: a bad path costs nothing
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _interrupt)

    @property
    def refused(self) -> bool:
        """True if the budget refused some work."""
        return bool(self.budget is not None and self.budget.refused)

    def on_done(self, name: str) -> None:
        """A run was evaluated: the summary and the bundle now include it."""
        from . import distributed
        from .experiments import write_summary  # here: building the CLI's parser imports this module, not torch

        if self.bundle is None or not distributed.is_main():  # rank 0 alone writes it (and again at the end)
            return

        write_summary(self.out)
        files = sync(self.out, self.bundle)
        self.log(f"bundle: {name} written to {self.bundle} ({len(files)} files, no weights)")

    def finish(self) -> None:
        """After the report: the bundle gets the summary, figure data, curves and REPORT.md too."""
        if self.bundle is None:
            return
        try:
            files = sync(self.out, self.bundle)
        except UserError as e:  # e.g. nothing finished within the budget: no summary to bundle
            self.log(f"bundle: not written ({e})")
            return
        self.log(f"bundle: {len(files)} files (no weights) in {self.bundle}")
