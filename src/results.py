"""The results store: reading and validating what a run folder or a grid folder holds.

No torch here: everything is JSON, CSV or npz, so figures and tables can be redrawn from a
weight-free results bundle.
"""
from __future__ import annotations

import csv
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from .utils import read_json


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]



def metrics_checksum(m: dict[str, Any]) -> str:
    """sha256 of a metrics dict without its "sha256" key (JSON floats round-trip exactly)."""
    body = json.dumps({k: v for k, v in m.items() if k != "sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """metrics.json of a finished run, or None if missing or unreadable (then it is redone)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return None
    try:
        m = read_json(path)
        if not isinstance(m, dict) or not all(k in m for k in ("val", "test", "conditions")):
            raise ValueError(f"{path} lacks val/test/conditions")
        digest = m.pop("sha256", None)  # files written before the checksum existed have none
        if digest is not None and digest != metrics_checksum(m):
            raise ValueError(f"{path} fails its checksum (changed or damaged after it was written)")
        return m
    except ValueError as e:
        warnings.warn(f"{e}; this run will be evaluated again", stacklevel=2)
        return None
