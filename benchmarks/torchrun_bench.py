"""``reproduce``'s grid under torchrun: N processes against 1 on this machine, and the split on many ranks.

    python benchmarks/torchrun_bench.py                    # smoke grid: about a minute on 2 CPU cores
    python benchmarks/torchrun_bench.py --preset quick     # quick grid: about half an hour on 2 CPU cores
    python benchmarks/torchrun_bench.py --preset quick --set data.limit=400 --set train.epochs=3   # a small one
    python benchmarks/torchrun_bench.py --balance-only     # the split of the full presets on 8 ranks, no training

Measured in one call, on generated faces whose decoded cache is warmed first (so no launch pays the
decode): the wall time of ``experiments.run_grid`` (training, evaluation, baselines, summary; no
rate-distortion step or report) launched three ways, process start-up included:
  one      one plain process with torch's default threads (all cores);
  one_1t   one plain process with one thread (OMP_NUM_THREADS=1);
  torchrun ``torchrun --standalone --nproc_per_node N``: N processes, one thread each (torchrun's default).
ratio = one / torchrun (> 1: torchrun is faster). The summaries are compared: torchrun's must equal
one_1t's bit for bit (same thread count, so the same float32 sums); with other thread counts they
differ in the last digits.

Balance: largest rank load / mean rank load of ``distributed.shard`` over ``experiments.plan_units``
(estimated costs) for the full grid (48 runs) and the analysis-full sweeps on ``--ranks`` ranks. The
multi-GPU speed-up is an estimate on paper, not a measurement: ranks / balance, assuming every GPU trains
its share as fast as one GPU would (smaller stacks per GPU may use a GPU less well; see RESULTS.md).
Writes JSON (default ``benchmarks/out/torchrun.json``) and prints a table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository, not this folder, goes on the path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

REPO = Path(__file__).resolve().parents[1]


def grid_preset(name: str, sets: list[str]):
    from src.config import PRESETS, set_fields

    return set_fields(PRESETS[name], sets)


def worker(preset: str, sets: list[str], out: str, data: str) -> None:
    """One process of a launch: the grid, timed; rank 0 prints {"grid_s": ...} as its last line."""
    import torch

    from src import distributed
    from src.experiments import run_grid

    t0 = time.perf_counter()
    run_grid(grid_preset(preset, sets), out, data, "cpu", progress=False, log=lambda _: None)
    if distributed.is_main():
        print(json.dumps({"grid_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}))


def launch(cmd: list[str], env: dict[str, str], cwd: Path) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"launch failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(p.stdout.strip().splitlines()[-1])}


def comparable(path: Path) -> dict:
    s = json.loads(path.read_text())
    return {**s, "grid": {k: v for k, v in s["grid"].items() if k != "started"}}


def measure(preset: str, sets: list[str], nproc: int, work: Path) -> dict:
    from dataclasses import replace

    from src.data import load_dataset
    from src.sample import write_sample

    p = grid_preset(preset, sets)
    data = work / "faces"
    write_sample(data, n=p.limit or p.sample_size, seed=0, size=p.image_size, progress=False)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS")}
    env.update(PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    cwd = Path.cwd()
    os.chdir(work)  # data/.cache is relative to the working directory, as in the launches below
    try:
        load_dataset(replace(p.data, root=str(data)), progress=False, log=lambda _: None)  # warm the cache
    finally:
        os.chdir(cwd)
    me = [str(Path(__file__).resolve()), "--preset", preset, *(f"--set={s}" for s in sets), "--worker"]
    runs = {
        "one": launch([sys.executable, *me, str(work / "one"), str(data)], env, work),
        "one_1t": launch([sys.executable, *me, str(work / "one_1t"), str(data)], {**env, "OMP_NUM_THREADS": "1"}, work),
        "torchrun": launch([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                            *me, str(work / "torchrun"), str(data)], env, work),
    }
    summaries = {k: comparable(work / k / "summary.json") for k in runs}
    return {"preset": preset, "set": sets, "nproc": nproc, "runs": runs,
            "ratio_wall": runs["one"]["wall_s"] / runs["torchrun"]["wall_s"],
            "ratio_grid": runs["one"]["grid_s"] / runs["torchrun"]["grid_s"],
            "ratio_wall_vs_one_thread": runs["one_1t"]["wall_s"] / runs["torchrun"]["wall_s"],
            "summary_equal_to_one_1t": summaries["torchrun"] == summaries["one_1t"],
            "summary_equal_to_one": summaries["torchrun"] == summaries["one"]}


def balances(ranks: int) -> dict:
    """Balance of the split (largest / mean rank load) for the full grid and the analysis-full sweeps."""
    from src import distributed
    from src.config import PRESETS
    from src.experiments import grid_configs, plan_units
    from src.sweeps import SWEEP_PLANS, sweep_points

    n = 70_000
    out = {}
    for name in ("full", "analysis-full"):
        p = PRESETS[name]
        calls = {"grid": grid_configs(p, p.data)}
        if name in SWEEP_PLANS:
            calls["sweeps"] = {pt["run"]: pt["config"] for pt in sweep_points(SWEEP_PLANS[name], p, p.data)
                               if pt["run"].startswith("sweeps/")}
        for call, configs in calls.items():
            for parallel, label in ((0, "stacked (GPU default)"), (1, "one at a time (CPU default)")):
                units = plan_units(configs, None, n, parallel, ranks)
                b = distributed.balance([u.cost for u in units], ranks)
                out[f"{name} {call}, {label}"] = {"runs": len(configs), "units": len(units), "balance": b,
                                                  "speedup_estimate": ranks / b}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", choices=("smoke", "quick"), default="smoke", help="grid to time")
    ap.add_argument("--nproc", type=int, default=2, help="torchrun processes")
    ap.add_argument("--ranks", type=int, default=8, help="ranks of the balance figure")
    ap.add_argument("--balance-only", action="store_true", help="no training: the balance figure only")
    ap.add_argument("--out", default=str(REPO / "benchmarks/out/torchrun.json"), help="JSON written here")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="change the preset, e.g. train.epochs=3 or data.limit=400 (repeatable)")
    ap.add_argument("--worker", nargs=2, metavar=("OUT", "DATA"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.preset, a.set, *a.worker)
        return 0
    result = {"command": " ".join(["python benchmarks/torchrun_bench.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.machine(),
              "cores": os.cpu_count(), "load_before": os.getloadavg()}
    import torch

    result["torch"] = torch.__version__
    if not a.balance_only:
        with tempfile.TemporaryDirectory() as tmp:
            result["measured"] = m = measure(a.preset, a.set, a.nproc, Path(tmp))
        result["load_after"] = os.getloadavg()
        print(f"{a.preset} grid {' '.join(a.set)}, {result['cores']} cores, load {result['load_before'][0]:.1f}: "
              "wall (grid) seconds")
        for k, r in m["runs"].items():
            print(f"  {k:9s} {r['wall_s']:7.1f} ({r['grid_s']:.1f})  threads {r['threads']}")
        print(f"  ratio one / torchrun x{a.nproc}: {m['ratio_wall']:.2f} wall, {m['ratio_grid']:.2f} grid; "
              f"vs one thread: {m['ratio_wall_vs_one_thread']:.2f}; summary equal to one_1t: "
              f"{m['summary_equal_to_one_1t']}, to one: {m['summary_equal_to_one']}")
    result["balance"] = balances(a.ranks)
    print(f"split on {a.ranks} ranks (estimated costs; speed-up = ranks / balance is an estimate):")
    for k, b in result["balance"].items():
        print(f"  {k}: {b['runs']} runs in {b['units']} units, balance {b['balance']:.3f}, "
              f"speed-up <= {b['speedup_estimate']:.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
