"""Small shared helpers: user-facing errors, seeding, atomic file writes, progress bars, the CPU heap.

Every file the project writes goes through ``atomic_write``: the bytes land in a temp
file in the same folder, are flushed to disk, and only then renamed over the target, so
a reader never sees a half-written result that looks complete.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import random
import secrets
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


class UserError(Exception):
    """A problem the user can fix (bad argument, missing data, ...).

    The CLI prints ``error: <message>`` on one line and exits with code 2; tracebacks
    are reserved for bugs.
    """


def set_seed(seed: int) -> None:
    """Seed ``random``, numpy and torch (CPU and all GPUs) in one place."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_HEAP_KEPT = False


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed large blocks instead of unmapping them (once per process).

    glibc serves every block of 32 MiB or more (the VAE's 512 x 16384 float32 weights and their
    gradients are exactly 32 MiB) with a fresh ``mmap`` and unmaps it on free, so each training step
    page-faulted its weight-sized temporaries in again, zero-filled by the kernel: a fresh
    sign() of one such tensor took 14 ms instead of 2 ms (benchmarks/RESULTS.md). This serves
    large blocks from the heap and keeps up to 1 GiB of freed memory at its top for reuse. The cost:
    the process's resident memory does not shrink back after its peak. Returns whether it applied
    (glibc only; elsewhere, such as macOS or musl, nothing changes).
    """
    global _HEAP_KEPT
    if not _HEAP_KEPT and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        _HEAP_KEPT = bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 30))
    return _HEAP_KEPT


def _new_temp(path: Path) -> Path:
    """Create an empty, unique temp file next to ``path``.

    ``os.open`` with mode 0o666 lets the kernel apply the process umask, so results get the
    usual permissions (mkstemp would make them 0600) without ever changing the umask.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temp file next to {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success fsync it and rename it onto ``path``.

    On any exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename in (None, str(tmp)):
            e.filename = str(path)  # a failed write (disk full, ...) names the file the user knows
        raise


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` through a temp file (keys may contain '/')."""

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    return atomic_write(path, writer)


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON; a truncated or garbled file raises ``ValueError`` naming the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e


def in_notebook() -> bool:
    """True inside a Jupyter kernel (its sys.stderr is ipykernel's stream, never a terminal)."""
    return "ipykernel" in sys.modules and type(sys.stderr).__module__.startswith("ipykernel")


def progress_bar(iterable=None, *, show: bool = True, inner: bool = False, **kw):
    """A tqdm bar drawn only where someone watches it.

    ``show=False`` (``--no-progress``): never. Otherwise on a terminal only (tqdm's ``disable=None``:
    a log file gets no redraws), and in a notebook one bar per run, updated in place: the outer bars
    (``inner=False``: one per run, per stack, per decode) are kept, the per-batch ``inner`` ones are not
    drawn, so a training cell holds a bar per run instead of an output per epoch. Plain tqdm, not
    tqdm.auto: without ipywidgets that one warns in notebooks.
    """
    from tqdm import tqdm

    if not show:
        disable = True
    elif in_notebook():
        disable = inner
    else:
        disable = None
    return tqdm(iterable, disable=disable, **kw)
