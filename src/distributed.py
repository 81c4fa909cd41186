"""Many processes, one results folder: ranks under ``torchrun``, the split of the work, and file locks.

``torchrun`` (``torch.distributed.run``, started by hand or by SLURM's ``srun``) runs the same
command in every process and gives each RANK, WORLD_SIZE and LOCAL_RANK. ``setup`` joins the
process group (nccl on CUDA GPUs, gloo on CPUs) and pins the process to GPU LOCAL_RANK. Without
torchrun every function here acts for one process (rank 0 of 1) and starts nothing.

Ranks exchange no results, only rank 0's plan of the unfinished work (``broadcast``); everything
else goes through the files. So the results folder must be the same path on every node: a shared
file system whose ``flock`` works across nodes (NFSv4; Lustre mounted with ``-o flock``).

Locks (``flock``: the kernel drops them when a process dies, so a killed rank leaves none held):
  OUT/.lock          the door, held a moment to join (or be refused by) the writers of OUT; its
                     text names the last process that joined and its grid
  OUT/.lock.writers  shared by every process writing the same grid (any ranks, any launches);
                     exclusive for a process that needs OUT alone
  RUN/.lock          one per run folder, held while the run is trained or evaluated; its text names
                     the process that last did ("pid P, rank R/W on HOST"): who trained the run
"""
from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from .utils import UserError

T = TypeVar("T")
# The last barrier of a grid waits for the slowest rank's runs (hours on the full protocol), so the
# group's timeout is long; a rank that dies is handled by torchrun, which then stops every rank.
TIMEOUT = dt.timedelta(days=7)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in a plain process and in rank 0 of a torchrun launch: the one that writes the shared files."""
    return rank() == 0


def tag() -> str:
    """A log prefix naming this rank under torchrun ("rank 1/4: "), else nothing."""
    return f"rank {rank()}/{world_size()}: " if world_size() > 1 else ""


def _group():
    import torch.distributed as dist

    return dist if world_size() > 1 and dist.is_available() and dist.is_initialized() else None


def setup(device: str = "auto") -> None:
    """Under torchrun, join the process group once (from torchrun's environment) and, when ``device``
    is "auto" or "cuda" on a CUDA machine, make "cuda" mean GPU LOCAL_RANK for this process."""
    if world_size() <= 1 or _group() is not None:
        return
    import torch
    import torch.distributed as dist

    cuda = (device == "auto" or device.startswith("cuda")) and torch.cuda.is_available()
    if cuda:  # the stored configs keep "auto"/"cuda": the same on every rank, so the same summary
        if local_rank() >= torch.cuda.device_count():
            raise UserError(f"torchrun started local rank {local_rank()} but this node has "
                            f"{torch.cuda.device_count()} GPUs; use --nproc_per_node {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank())  # nccl also needs one GPU per rank for its own traffic
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    atexit.register(dist.destroy_process_group)


def barrier() -> None:
    """Wait for every rank (nothing without torchrun)."""
    dist = _group()
    if dist is None:
        return
    if dist.get_backend() == "nccl":
        import torch

        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` (any picklable value) on every rank; the others pass anything, e.g. None."""
    dist = _group()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` without torchrun); waits for every rank."""
    dist = _group()
    if dist is None:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks: rank 0 fills caches (decoded images, the generated
    sample) that the others then read instead of writing them all at once."""
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def shard(costs: Sequence[float], n: int) -> list[list[int]]:
    """Split items (their indices into ``costs``) among ``n`` ranks, longest processing time first.

    The costliest item goes to the least loaded rank (ties: lower rank; equal costs: earlier item),
    so every rank computes the same split; the largest load is at most 4/3 of the best possible
    (Graham 1969), and with many similar items close to the mean.
    """
    loads, parts = [0.0] * n, [[] for _ in range(n)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(n), key=lambda r: (loads[r], r))
        parts[r].append(i)
        loads[r] += costs[i]
    return parts


def balance(costs: Sequence[float], n: int) -> float:
    """Largest rank load / mean rank load of ``shard(costs, n)``: 1.0 = no rank waits for another."""
    loads = [sum(costs[i] for i in part) for part in shard(costs, n)]
    return max(loads) * n / sum(loads) if sum(loads) else 1.0


def my_share(items: list[T], costs: Sequence[float] | None = None) -> list[T]:
    """This rank's part of rank 0's ``items`` (``shard`` by ``costs``, default equal)."""
    items = broadcast(items)
    part = shard([1.0] * len(items) if costs is None else costs, world_size())[rank()]
    return [items[i] for i in part]


# ---------------------------------------------------------------- file locks

def _who() -> str:
    return f"pid {os.getpid()}" + (f", rank {rank()}/{world_size()}" if world_size() > 1 else "") + \
           f" on {socket.gethostname()}"


def _try(f, op: int) -> bool:
    try:
        fcntl.flock(f, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _write(f, text: str) -> None:
    f.seek(0)
    f.truncate()
    f.write(text)
    f.flush()


@contextmanager
def grid_lock(out: Path, grid: str | None = None) -> Iterator[None]:
    """Be one of the writers of ``out``.

    ``grid``: an id of what is written (``experiments.grid_id``). Every process with the same id
    shares ``out`` (the ranks of a launch, and separate launches; the run locks keep them apart).
    A process with another id, or with ``grid=None`` (it needs ``out`` alone), gets a one-line
    error naming a writer while any other process writes.
    """
    out.mkdir(parents=True, exist_ok=True)
    want = f"grid {grid}" if grid else "sole writer"
    with open(out / ".lock", "a+") as door, open(out / ".lock.writers", "a+") as writers:
        fcntl.flock(door, fcntl.LOCK_EX)  # joining is one step: no one else tests or converts meanwhile
        try:
            door.seek(0)
            holder = door.read().strip()
            if not _try(writers, fcntl.LOCK_EX):  # others write: join them if they write the same grid
                if grid is None or holder.rpartition(": ")[2] != want:
                    raise UserError(f"another process is writing {out} ({holder or 'pid unknown'}); "
                                    "wait for it to finish or use another --out")
                fcntl.flock(writers, fcntl.LOCK_SH)  # does not wait: every holder is shared
            elif grid:
                fcntl.flock(writers, fcntl.LOCK_SH)  # let the next process of this grid join
            _write(door, f"{_who()}: {want}")
        finally:
            fcntl.flock(door, fcntl.LOCK_UN)
        yield


@contextmanager
def one_at_a_time(path: Path, what: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock file ``path`` alone; if another process holds it, say whom ``what`` waits for, and wait."""
    with open(path, "a+") as f:
        if not _try(f, fcntl.LOCK_EX):
            f.seek(0)
            log(f"{what}: waiting for {f.read().strip() or 'another process'} to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        _write(f, _who())
        yield


class RunLock:
    """``RUN/.lock``: held by the one process that trains or evaluates the run."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path, self.f = run_dir / ".lock", None

    def acquire(self, wait: bool = False) -> bool:
        """Take the lock; without ``wait``, False at once if another process holds it."""
        self.f = open(self.path, "a+")
        if wait:
            fcntl.flock(self.f, fcntl.LOCK_EX)
        elif not _try(self.f, fcntl.LOCK_EX):
            self.release()
            return False
        return True

    def holder(self) -> str:
        """The text of the lock: the process that holds it, or last held it."""
        try:
            return self.path.read_text().strip() or "pid unknown"
        except OSError:
            return "pid unknown"

    def sign(self) -> None:
        """Write this process into the held lock (called once it has work to do on the run)."""
        _write(self.f, _who())

    def release(self) -> None:
        if self.f is not None:
            self.f.close()  # closing drops the flock
            self.f = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
