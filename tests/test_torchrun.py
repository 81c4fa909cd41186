"""``reproduce`` under torchrun (issue 14), on CPUs with gloo: the ranks share the grid's runs, the summary
equals a one-process run's, a killed rank leaves a grid that one process finishes; and the pieces under it
(the split of the work, the locks) without subprocesses.

Every process runs with one intra-op thread (torchrun's default for several processes per node): float32
sums are then done in the same order in every process, so "equal" below means bit for bit.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from forked_cli import Proc

from src import distributed as D
from src.config import PRESETS
from src.distributed import grid_lock
from src.experiments import grid_configs, plan_units
from src.utils import UserError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
       "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(k, None)
WAIT = 600  # s; a generous ceiling on a loaded 2-core machine
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def reproduce(data: Path, out: Path) -> list[str]:
    return ["-m", "src", "reproduce", "--preset", "smoke", "--device", "cpu", "--data", str(data), "--out", str(out),
            "--no-progress"]


def comparable(summary: dict) -> dict:
    """A summary without its wall-clock field (the grid's start time)."""
    return {**summary, "grid": {k: v for k, v in summary["grid"].items() if k != "started"}}


def trained_by(out: Path) -> dict[str, str]:
    """run name -> the text of its lock: the process that trained it ("pid P, rank R/W on HOST")."""
    return {d.name: (d / ".lock").read_text() for d in sorted(out.iterdir()) if (d / ".lock").is_file()}


@pytest.fixture
def reference(smoke_grid):
    """The session's smoke grid (tests/conftest.py: one plain process, one torch thread) and its faces."""
    return smoke_grid, comparable(json.loads((smoke_grid / "runs" / "summary.json").read_text()))


def test_two_ranks_share_the_grid_and_give_the_one_process_summary(reference, tmp_path):
    root, ref = reference
    out = tmp_path / "out"
    p = subprocess.run([*TORCHRUN, *reproduce(root / "faces", out)], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=WAIT)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    assert comparable(json.loads((out / "summary.json").read_text())) == ref
    by = trained_by(out)
    ranks = {run: re.fullmatch(r"pid (\d+), rank (\d)/2 on .+", text) for run, text in by.items()}
    assert len(ranks) == 16 and all(ranks.values()), by
    sets = [{run for run, m in ranks.items() if m[2] == r} for r in "01"]
    assert sets[0] and sets[1] and not sets[0] & sets[1] and sets[0] | sets[1] == set(by)
    assert len({m[1] for m in ranks.values()}) == 2  # two processes, one per rank
    assert abs(len(sets[0]) - len(sets[1])) <= 2  # the split is balanced (AE and VAE costs differ a little)
    assert re.search(r"rank [01]/2: \[\d+/\d+\] \S+ \(grid: \d+/16 runs done, \S+ elapsed, ETA \S+\)", p.stdout)
    assert (out / "REPORT.md").is_file()  # rank 0 went on to the report


def test_killed_rank_then_one_process_finishes_exactly_the_missing_runs(reference, tmp_path):
    root, ref = reference
    out = tmp_path / "out"
    launch = subprocess.Popen([*TORCHRUN, *reproduce(root / "faces", out)], cwd=tmp_path, env=ENV, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim, deadline = None, time.monotonic() + WAIT
    try:
        while victim is None:  # rank 1 mid-way: it finished a run and holds the next
            assert launch.poll() is None and time.monotonic() < deadline, "the launch ended before the kill"
            mine = {run: t for run, t in trained_by(out).items() if ", rank 1/2 " in t} if out.is_dir() else {}
            if len(mine) >= 2 and any(not (out / run / "metrics.json").exists() for run in mine):
                victim = int(re.match(r"pid (\d+)", next(iter(mine.values())))[1])
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)
        assert launch.wait(WAIT) != 0  # torchrun stops the other rank and fails
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    finished = {run: t for run, t in trained_by(out).items() if (out / run / "metrics.json").exists()}
    assert 0 < len(finished) < 16 and not (out / "summary.json").exists()

    p = Proc(reproduce(root / "faces", out)[2:], tmp_path)  # one plain process (forked: no start-up imports)
    assert p.wait() == 0, p.err[-10:]
    assert any(f"{len(finished)} of 16 runs already finished; {16 - len(finished)} to do" in line for _, line in p.out)
    assert comparable(json.loads((out / "summary.json").read_text())) == ref
    after = trained_by(out)
    assert all(after[run] == t for run, t in finished.items())  # finished runs were not touched
    assert {run for run, t in after.items() if "rank" not in t} == set(after) - set(finished)


# ---------------------------------------------------------------- the pieces, in one process

def test_shard_is_deterministic_balanced_and_covers_every_item():
    costs = [5, 1, 4, 4, 2, 3, 3, 1]
    parts = D.shard(costs, 3)
    assert parts == D.shard(costs, 3) and sorted(i for p in parts for i in p) == list(range(len(costs)))
    assert [sum(costs[i] for i in p) for p in parts] == [8, 8, 7]  # LPT: 5+2+1, 4+3+1, 4+3
    assert D.shard(costs, 1) == [sorted(range(len(costs)), key=lambda i: (-costs[i], i))]
    assert D.shard([], 4) == [[], [], [], []] and D.balance([1.0], 4) == 4.0


@pytest.mark.parametrize("parallel_runs, n_units", [(0, 16), (1, 48)])
def test_full_preset_on_8_ranks_is_balanced(parallel_runs, n_units):
    """GPU default (all of a model's runs stacked): each model's 24 runs become 8 stacks of 3, so every rank
    gets one AE and one VAE stack; one at a time, every rank gets 3 AE and 3 VAE runs."""
    units = plan_units(grid_configs(PRESETS["full"], PRESETS["full"].data), None, 70_000, parallel_runs, world=8)
    assert len(units) == n_units and sum(len(u.names) for u in units) == 48
    assert D.balance([u.cost for u in units], 8) == pytest.approx(1.0)


def test_grid_lock_is_shared_by_one_grid_and_refuses_another(tmp_path):
    with grid_lock(tmp_path, "smoke-a"), grid_lock(tmp_path, "smoke-a"):  # ranks, or launches of one grid
        for other in ("smoke-b", None):  # another grid, or a process that needs the folder alone
            with pytest.raises(UserError, match=rf"another process is writing {re.escape(str(tmp_path))} "
                                                rf"\(pid {os.getpid()} on .+: grid smoke-a\); wait"):
                with grid_lock(tmp_path, other):
                    pass
    with grid_lock(tmp_path), pytest.raises(UserError, match="another process is writing"):
        with grid_lock(tmp_path, "smoke-a"):  # a sole writer keeps the folder to itself
            pass
    with grid_lock(tmp_path, "smoke-b"):  # every holder gone: anyone may write
        pass


def test_run_lock_is_held_by_one_holder_and_names_it(tmp_path):
    with D.RunLock(tmp_path / "run") as a, D.RunLock(tmp_path / "run") as b:
        assert a.acquire() and not b.acquire()  # flock: two open files conflict even in one process
        a.sign()
        assert b.holder() == f"pid {os.getpid()} on {os.uname().nodename}"
    with D.RunLock(tmp_path / "run") as c:
        assert c.acquire()  # released with its holder


def test_benchmark_writes_the_balance_of_the_full_presets(tmp_path):
    from benchmarks import torchrun_bench

    assert torchrun_bench.main(["--balance-only", "--out", str(tmp_path / "b.json")]) == 0
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["command"].endswith("--balance-only --out " + str(tmp_path / "b.json"))
    full = r["balance"]["full grid, stacked (GPU default)"]
    assert (full["runs"], full["units"]) == (48, 16) and full["balance"] == pytest.approx(1.0)
    assert all(1 - 1e-9 < b["balance"] < 1.1 and b["speedup_estimate"] == pytest.approx(8 / b["balance"])
               for b in r["balance"].values())
