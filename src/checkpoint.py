"""Checkpoint files: torch.save / torch.load through a temp file, CRC-verified, plus RNG state.

A checkpoint is a dict ``{"model", "optimizer", "config", "epoch", "best_val", "best_epoch",
"rng", "history"}`` (``last.pt``) or ``{"model", "config", "epoch", "val_loss"}`` (``best.pt``).
"""
from __future__ import annotations

import io
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


class CorruptFile(UserError, ValueError):
    """A stored file is truncated or garbled: a ValueError for callers that redo the work, one line in the CLI."""


def save_torch(obj: Any, path: Path) -> None:
    """torch.save through a temp file + rename: a crash never leaves a half checkpoint.

    Serialized in memory first: torch's own file writer reports a full disk as an opaque
    RuntimeError, a plain write raises ``OSError(ENOSPC)`` that the CLI can explain.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def load_torch(path: Path, map_location: Any = "cpu") -> Any:
    """torch.load that turns a truncated or garbled file into ``CorruptFile`` naming it.

    torch.load does not check the CRC-32 its zip container stores for every record, so a
    flipped byte in tensor data would load silently; ``testzip`` verifies them all first.
    """
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            raise ValueError(f"checksum mismatch in {bad}")
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # zip errors, unpickling errors, EOF: all mean "corrupt"
        raise CorruptFile(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e


