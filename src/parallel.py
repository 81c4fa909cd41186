"""Worker processes for per-image jobs (decoding files, coding images and latents): ``WorkerPool``.

Jobs are module-level functions of modules that import numpy and Pillow only (``decode``,
``compression``), so a worker starts in a fraction of a second: the forkserver imports the job's
module once and forks every worker from it, and the workers skip the parent's ``__main__``.
forkserver is safe even when the parent already runs torch / CUDA threads (fork is not).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import types
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

PARALLEL_MIN = 64  # below this many jobs in one map, starting or feeding worker processes costs more than it saves


def cpu_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main_importable() -> bool:
    """Whether a forkserver (or spawn) child can prepare ``__main__`` the way multiprocessing does: by
    module name, or from its file. A script read from standard input (``python - <<EOF``) has the
    file "<stdin>", which no child can run again; scripts, ``python -c``, the CLI and Jupyter can."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


@contextmanager
def _children_skip_main() -> Iterator[None]:
    """Worker processes started inside do not import the parent's ``__main__`` again.

    forkserver and spawn children first import the parent's main module (for functions defined
    there); a main that imports torch (the benchmark, a notebook kernel) cost every worker 1-2 s of a
    2,000-file decode. Only process start-up sees the stand-in.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __spec__, no __file__: nothing to import
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class WorkerPool:
    """``map(job, items)`` over ``workers`` processes, in order; in this process when ``workers`` <= 1,
    when no child could start (``main_importable``), or for fewer than ``PARALLEL_MIN`` items. Use as a
    context manager: the workers start on the first parallel ``map`` and stop on exit.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = cpu_workers() if workers is None else workers
        self._pool = None
        self.parallel = self.workers > 1 and main_importable()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, job: Callable, items: Iterable, chunksize: int | None = None) -> Iterator:
        items = list(items)
        if not self.parallel or len(items) < PARALLEL_MIN:
            return map(job, items)
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else None)
            if ctx.get_start_method() == "forkserver":  # its server imports the job's module once, for every worker
                ctx.set_forkserver_preload([job.__module__])
            self._pool = concurrent.futures.ProcessPoolExecutor(min(self.workers, 32), mp_context=ctx)
        chunksize = chunksize or max(1, min(256, len(items) // (self.workers * 8)))
        with _children_skip_main():  # map() submits every chunk, which starts the workers
            return self._pool.map(job, items, chunksize=chunksize)
