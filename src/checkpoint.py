"""Checkpoint files: torch.save / torch.load through a temp file, CRC-verified, plus RNG state.

A checkpoint is a dict ``{"model", "optimizer", "config", "epoch", "best_val", "best_epoch",
"rng", "history"}`` (``last.pt``) or ``{"model", "config", "epoch", "val_loss"}`` (``best.pt``) of
tensors, numbers, strings and containers only. Run folders are shared (bundles, resuming someone
else's run), so loading never unpickles anything else: ``torch.load(weights_only=True)`` and those keys.
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .utils import UserError, atomic_path


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


LAST_KEYS = ("model", "optimizer", "config", "epoch", "best_val", "best_epoch", "rng", "history")  # last.pt
BEST_KEYS = ("model", "config", "epoch", "val_loss")  # best.pt
CHECKPOINT_KEYS = frozenset(LAST_KEYS + BEST_KEYS)  # the allow-list of what ``load_torch`` accepts


class CorruptFile(UserError, ValueError):
    """A stored file is truncated or garbled: a ValueError for callers that redo the work, one line in the CLI."""


class ForeignCheckpoint(UserError):
    """A checkpoint holds something this project never writes (a pickled object, an unknown entry).

    Not a ValueError: no caller treats it as damage to redo over; the CLI says it in one line."""


def save_torch(obj: dict[str, Any], path: Path) -> None:
    """torch.save of a checkpoint dict (keys from ``CHECKPOINT_KEYS``) through a temp file + rename:
    a crash never leaves a half checkpoint.

    Serialized in memory first: torch's own file writer reports a full disk as an opaque
    RuntimeError, a plain write raises ``OSError(ENOSPC)`` that the CLI can explain.
    """
    extra = set(obj) - CHECKPOINT_KEYS
    if extra:
        raise ValueError(f"checkpoint keys {sorted(extra)} are not in checkpoint.CHECKPOINT_KEYS")
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def load_torch(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load of a checkpoint, refusing anything but weights and plain data, and naming the file.

    A truncated or garbled file raises ``CorruptFile``; a pickled object or an entry this project
    never writes raises ``ForeignCheckpoint`` without running any of it. torch.load does not check
    the CRC-32 its zip container stores for every record, so a flipped byte in tensor data would load
    silently; ``testzip`` verifies them all first.
    """
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            raise ValueError(f"checksum mismatch in {bad}")
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CorruptFile(f"{path} is not a readable checkpoint (UnpicklingError: {e})") from e
        what = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise ForeignCheckpoint(f"{path} holds a pickled object ({what[1] if what else 'not weights'}) that this "
                                "project never writes; refused without loading it (it could run code): use a "
                                "checkpoint written by python -m src") from None
    except Exception as e:  # zip errors, EOF: all mean "corrupt"
        raise CorruptFile(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or set(obj) - CHECKPOINT_KEYS:
        what = (f"entries ({', '.join(map(repr, sorted(set(obj) - CHECKPOINT_KEYS)))})" if isinstance(obj, dict)
                else f"a {type(obj).__name__} instead of a dict")
        raise ForeignCheckpoint(f"{path} holds {what} this project never writes; refused: use a checkpoint "
                                "written by python -m src")
    return obj
