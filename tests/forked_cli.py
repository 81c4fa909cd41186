"""``python -m src ARGS`` as a real, separate process that starts in a fraction of a second.

The tests that kill, stop or race CLI processes need many of them, and each ``python -m src`` pays
about 2 s of imports (torch) on a 2-core machine. ``Proc`` forks them instead from a multiprocessing
*forkserver* that has imported this module, and with it torch and the CLI's modules, once; no torch
operation ran there, so forking it is safe. A child is an ordinary process (its own pid, memory,
file locks and signals) that runs ``src.__main__.main(ARGS)`` in ``cwd`` with ``env`` and one torch
thread (torchrun's default when several processes share a node: float32 sums are then done in the
same order in every process, so results compare bit for bit). Its stdout and stderr go to files that
``Proc`` reads back line by line, with the time each line arrived.

The real entry point, ``python -m src``, still runs as a subprocess in every torchrun rank of
tests/test_torchrun.py.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from multiprocessing.connection import wait as wait_for
from pathlib import Path

import matplotlib.figure  # noqa: F401 - warm imports: every child inherits them from the forkserver
import torch
import torch._dynamo  # noqa: F401 - what torch.optim imports on the first optimizer (about 1.5 s)
from tqdm import tqdm

import src.claims
import src.experiments
import src.figdata
import src.rd
import src.report  # noqa: F401
from src.__main__ import main

REPO = Path(__file__).resolve().parents[1]
WAIT = 900  # s; a generous ceiling for one process on a loaded 2-core machine
_CONTEXT = None
_LIVE: list[Proc] = []


def start() -> None:
    """Start the forkserver now, in the background (tests/conftest.py does, when the session starts)."""
    _context()


def _context():
    """The forkserver context, its server started with this module imported (found through PYTHONPATH:
    Python 3.11's forkserver does not take the caller's sys.path)."""
    global _CONTEXT
    if _CONTEXT is None:
        from multiprocessing import forkserver

        server = forkserver._forkserver  # one per process, shared with src.data's decode pool
        if server._forkserver_pid is not None and hasattr(server, "_stop"):
            server._stop()  # started without this module (conftest starts ours first; this is the fallback)
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), str(REPO), old) if p)
        try:
            forkserver.ensure_running()
        finally:
            if old is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = old
        _CONTEXT = ctx
    return _CONTEXT


def _child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str, threads: int) -> None:
    """In the forked child: the CLI with its streams on files; exits with main's code (or the signal)."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's own
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115 - streams, never closed
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    torch.set_num_threads(threads)
    tqdm.set_lock(threading.RLock())  # not tqdm's multiprocessing lock, a semaphore a SIGKILL would leak
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


class Proc:
    """``main(ARGS)`` in a forked child running in ``cwd``; ``out`` holds (seconds since start, line)."""

    def __init__(self, args, cwd, env: dict[str, str] | None = None, threads: int = 1):
        self.logs = Path(tempfile.mkdtemp(prefix="forked-cli-"))
        paths = [str(self.logs / "stdout"), str(self.logs / "stderr")]
        for p in paths:
            Path(p).touch()
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
        self.t0 = time.monotonic()
        self.p = _context().Process(target=_child, args=([str(a) for a in args], str(cwd), env, *paths, threads))
        self.p.start()
        self.pid = self.p.pid
        _LIVE.append(self)
        self.out: list[tuple[float, str]] = []
        self.err: list[str] = []
        self._pump = threading.Thread(target=self._read, args=paths, daemon=True)
        self._pump.start()

    def _read(self, out_path: str, err_path: str) -> None:
        with open(out_path, encoding="utf-8") as fo, open(err_path, encoding="utf-8") as fe:
            partial = {fo: "", fe: ""}
            while True:
                ended = bool(wait_for([self.p.sentinel], 0.005))  # checked before the last read
                for f in (fo, fe):
                    partial[f] += f.read()
                    *lines, partial[f] = partial[f].split("\n")
                    if f is fo:
                        now = time.monotonic() - self.t0
                        self.out.extend((now, line) for line in lines)
                    else:
                        self.err.extend(lines)
                if ended:
                    self.out.extend((time.monotonic() - self.t0, rest) for rest in [partial[fo]] if rest)
                    self.err.extend(rest for rest in [partial[fe]] if rest)
                    return

    def poll(self) -> int | None:
        return self.p.exitcode

    def send_signal(self, sig: int) -> None:
        if self.p.exitcode is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = WAIT) -> int:
        self.p.join(timeout)
        if self.p.exitcode is None:
            raise TimeoutError(f"{self.pid} still running after {timeout} s")
        self._pump.join(10)
        if self in _LIVE:
            _LIVE.remove(self)
            shutil.rmtree(self.logs, ignore_errors=True)
        return self.p.exitcode

    def last_line(self) -> str:
        return self.out[-1][1] if self.out else "(start-up)"


@atexit.register
def _kill_leftovers() -> None:
    """A failed test may leave a child running: kill it before multiprocessing would wait for it."""
    for proc in _LIVE:
        if proc.p.exitcode is None:
            os.kill(proc.pid, 9)
        proc.p.join(10)
        shutil.rmtree(proc.logs, ignore_errors=True)
