"""The protocol in pieces: --seeds / --models / --runs, the budget, bundles written as runs finish, merge,
and the CPU rehearsal of benchmarks/gpu_piece.sh (docs/gpu.md)."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from src.__main__ import main
from src.budget import Budget, Plan, image_steps, parse_models, parse_seeds, plan_line
from src.report.tables import seed_coverage
from src.utils import UserError

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the plan's arithmetic, by hand

def test_image_steps_of_the_protocol():
    assert image_steps(8, 200, 49_000) == 78_400_000  # one model's 8 runs of one seed
    assert image_steps(16, 200, 49_000) * 3 == 470_400_000  # three seeds of the whole grid
    # evaluation: one pass over val + test (7,000 + 14,000) per run
    plan = Plan(runs=8, epochs=200, train_images=49_000, eval_images=21_000)
    assert plan.image_steps == 78_400_000 + 8 * 21_000 == 78_568_000
    assert plan.seconds(250_000) == pytest.approx(314.272)
    # the plan of a piece: the full preset's 70,000 images split 70/10/20
    from src.config import PRESETS
    from src.experiments import grid_configs
    from src.budget import piece_plan

    cfgs = [c for n, c in grid_configs(PRESETS["full"], PRESETS["full"].data).items() if n.startswith("ae-")]
    assert piece_plan(cfgs[:8], 70_000) == Plan(8, 200, 49_000, 21_000)


def test_plan_line_fits_and_over_budget():
    plan = Plan(8, 200, 49_000, 21_000)
    fits = plan_line(plan, 250_000, 540)  # 314 s
    assert "78.6 M image-steps" in fits and "5 min 14 s at 250,000 images/s" in fits and "fits" in fits
    over = plan_line(plan, 70_000, 540)  # 78,568,000 / 70,000 = 1,122.4 s: 582 s over
    assert "OVER the budget of 540 s by 9 min 42 s" in over and "\n" not in over
    assert "time unknown" in plan_line(plan, None, 540)


def test_parse_seeds_and_models():
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds("1,2") == (1, 2)
    assert parse_seeds("2,") == (2,)
    for bad in ("0", "x", "1,1", "-1,2", ","):
        with pytest.raises(UserError):
            parse_seeds(bad)
    assert parse_models("vae,ae", ("ae", "vae")) == ("ae", "vae")
    assert parse_models("vae", ("ae", "vae")) == ("vae",)
    with pytest.raises(UserError):
        parse_models("gan", ("ae", "vae"))


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_budget_admits_what_fits_at_the_measured_rate():
    clock = Clock()
    b = Budget(100, images_per_s=None, now=clock)
    assert b.admit(1000, "unit 1") is None  # no rate yet: admitted
    clock.t = 10  # unit 1 took 10 s: 100 images/s measured
    assert b.admit(5000, "unit 2") is None  # needs 50 s, 90 s left
    clock.t = 60  # 6,000 images in 60 s: still 100 images/s
    why = b.admit(5000, "unit 3")  # needs 50 s, 40 s left
    assert why is not None and "not starting unit 3" in why and "50 s at 100 images/s" in why and "40 s" in why
    assert b.admit(3000, "unit 4") is None  # 30 s: fits in the 40 s left
    assert b.refused == ["unit 3"]


def test_budget_uses_the_stated_rate_until_one_is_measured():
    clock = Clock()
    b = Budget(60, images_per_s=10, now=clock)
    assert "needs about 1 min 40 s at 10 images/s" in b.admit(1000, "big")  # 100 s > 60 s
    assert b.admit(500, "small") is None  # 50 s
    with pytest.raises(UserError):
        Budget(0)


def test_seed_coverage_counts_the_protocols_seeds():
    # AE: seed 0 in every cell, seeds 1 and 2 in the clean "none" cell; VAE: one cell, seed 5 (not the protocol's)
    runs = [{"model": "ae", "reg": reg, "noise_train": tr, "seed": 0}
            for reg in ("none", "l1", "l2", "l1+l2") for tr in (0.0, 0.1)]
    runs += [{"model": "ae", "reg": "none", "noise_train": 0.0, "seed": s} for s in (1, 2)]
    runs += [{"model": "vae", "reg": "l2", "noise_train": 0.1, "seed": 5}]
    assert seed_coverage(runs, [0, 1, 2], 0.1) == ("Seeds per cell (the protocol has 3): AE 1 cell with 3 of 3 seeds, "
                                                   "7 cells with 1 of 3 seeds; VAE 8 cells with 0 of 3 seeds.")


# ---------------------------------------------------------------- CLI refusals: one line, before any work

@pytest.mark.parametrize("flags, words", [(["--seeds", "1,1"], "distinct"), (["--models", "gan"], "--models"),
                                          (["--budget-s", "0"], "must be > 0"), (["--seeds", "x"], "--seeds")])
def test_bad_piece_flags_are_one_line(tmp_path, capsys, flags, words):
    try:
        rc = main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--data", str(tmp_path / "none"),
                   *flags])
    except SystemExit as e:  # argparse's refusals
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_bundle_inside_the_runs_folder_is_refused_before_any_work(tmp_path, capsys):
    rc = main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--data", str(tmp_path / "none"),
               "--bundle", str(tmp_path / "runs" / "b.tar.gz")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "inside" in err and len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- pieces on the CPU (forked CLI processes)

def _piece(faces: Path, out: Path, bundle: Path, *flags):
    from forked_cli import Proc

    return Proc(["reproduce", "--preset", "smoke", "--device", "cpu", "--data", faces, "--out", out,
                 "--bundle", bundle, "--rd-sweep", "none", "--no-progress", *flags], cwd=out.parent)


def _metrics(summary: dict) -> dict:
    return {r["run"]: (r["val"], r["test"], r["best_epoch"]) for r in summary["runs"]}


def test_merging_the_ae_and_vae_pieces_equals_one_reproduce(smoke_grid, tmp_path):
    """Two pieces (AE, VAE; each --seeds 0,) merged give the summary of the one smoke reproduce of both."""
    pieces = {m: _piece(smoke_grid / "faces", tmp_path / f"runs-{m}", tmp_path / f"{m}.tar.gz",
                        "--models", m, "--seeds", "0,", "--budget-s", "600") for m in ("ae", "vae")}
    for m, p in pieces.items():
        assert p.wait() == 0, p.err[-5:]
        assert any(line.startswith("plan: 8 runs x 2 epochs x 33 training images") for _, line in p.out)
    assert main(["merge", str(tmp_path / "ae.tar.gz"), str(tmp_path / "vae.tar.gz"), "--into",
                 str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "summary.json").read_text())
    whole = json.loads((smoke_grid / "runs" / "summary.json").read_text())
    assert len(merged["runs"]) == 16
    assert _metrics(merged) == _metrics(whole)  # every metric equal
    assert merged["baselines"] == whole["baselines"]
    curves = json.loads((tmp_path / "merged" / "pca_curve.json").read_text())["curves"]  # the diagnostics' PCA curve
    assert curves.keys() == json.loads((smoke_grid / "runs" / "pca_curve.json").read_text())["curves"].keys()
    assert not list((tmp_path / "merged").rglob("*.pt"))
    # the report of the merged folder draws from the bundle alone and says how many seeds each cell has
    assert main(["report", str(tmp_path / "merged")]) == 0
    report = (tmp_path / "merged" / "REPORT.md").read_text()
    assert "Seeds per cell (the protocol has 1): AE 8 cells with 1 of 1 seed; VAE 8 cells with 1 of 1 seed." in report
    # merging the same bundle again adds nothing
    assert main(["merge", str(tmp_path / "ae.tar.gz"), "--into", str(tmp_path / "merged")]) == 0
    assert len(json.loads((tmp_path / "merged" / "summary.json").read_text())["runs"]) == 16


def test_merge_refuses_a_bundle_of_other_data(smoke_grid, tmp_path, capsys):
    from src.sample import write_sample

    write_sample(tmp_path / "other", n=60, seed=1, progress=False)  # same size and names, other faces
    one = ("--runs", "ae-none-clean-s0")
    a = _piece(smoke_grid / "faces", tmp_path / "runs-a", tmp_path / "a", *one)
    b = _piece(tmp_path / "other", tmp_path / "runs-b", tmp_path / "b", *one)
    assert a.wait() == 0 and b.wait() == 0, (a.err[-5:], b.err[-5:])
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["ae-none-clean-s0"]
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--into", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data fingerprint" in err and "nothing was merged" in err
    assert not (tmp_path / "m").exists()
    # each other difference, edited into a copy of bundle a's grid.json, is refused with its name
    good = json.loads((tmp_path / "a" / "grid.json").read_text())
    edits = [("generator version", lambda g: g["generator"].update(version=1)),
             ("preset", lambda g: g["preset"].update(name="quick")),
             ("preset settings", lambda g: g["preset"].update(epochs=3)),
             ('training setting {"lr": 0.5} vs {"lr": 0.001}', lambda g: g["training"].update(lr=0.5))]
    for words, edit in edits:
        grid = json.loads(json.dumps(good))
        edit(grid)
        (tmp_path / "b" / "grid.json").write_text(json.dumps(grid))
        assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--into", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f": {words}" in err, (words, err)
        assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_piece_leaves_every_finished_run_in_its_bundle(smoke_grid, tmp_path, sig):
    """Stopped halfway, the bundle holds each run that finished (but possibly the one being copied at the
    instant of a SIGKILL), each complete and identical to the run folder's files."""
    out, bundle = tmp_path / "runs", tmp_path / "bundle"
    p = _piece(smoke_grid / "faces", out, bundle, "--models", "ae", "--set", "train.epochs=4")
    deadline = time.monotonic() + 300
    while len([d for d in bundle.glob("*/metrics.json")]) < 2 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(sig)
    rc = p.wait()
    assert rc == (-9 if sig == signal.SIGKILL else 130), p.err[-5:]
    finished = {d.parent.name for d in out.glob("*/metrics.json")}
    bundled = {d.parent.name for d in bundle.glob("*/metrics.json")}
    assert 2 <= len(bundled) < 8 and bundled <= finished
    assert len(finished - bundled) <= (1 if sig == signal.SIGKILL else 0)
    for run in bundled:
        for f in (out / run).iterdir():
            if f.suffix in (".json", ".csv", ".npz") and not f.name.startswith("."):
                assert (bundle / run / f.name).read_bytes() == f.read_bytes(), f
    assert not list(bundle.rglob("*.pt"))
    assert main(["merge", str(bundle), "--into", str(tmp_path / "merged")]) == 0  # a usable bundle
    assert len(json.loads((tmp_path / "merged" / "summary.json").read_text())["runs"]) == len(bundled)


def test_gpu_piece_script_on_the_cpu(tmp_path):
    """benchmarks/gpu_piece.sh end to end at smoke size: sample, piece, bundle and log in OUTDIR (<= 8 files)."""
    env = {**os.environ, "PYTHON": sys.executable, "PRESET": "smoke", "N": "60", "DEVICE": "cpu",
           "WORK": str(tmp_path / "work"), "EXTRA": "--runs=ae-none-*", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_piece.sh"), str(tmp_path / "out"), "ae", "0"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["REPORT.md", "bundle.tar.gz", "env.txt", "piece.log", "timing.txt"]
    assert all(p.stat().st_size < 16 * 2**20 for p in (tmp_path / "out").iterdir())
    with tarfile.open(tmp_path / "out" / "bundle.tar.gz") as tar:
        names = tar.getnames()
    runs = {f"ae-none-{c}-s0/metrics.json" for c in ("clean", "noise0.1")}
    assert {"grid.json", "summary.json", *runs} <= set(names)
    assert not [n for n in names if n.endswith(".pt")]
    log = (tmp_path / "out" / "piece.log").read_text()
    assert "plan: 2 runs x 2 epochs x 33 training images" in log
    assert "trainer: plain stacked, 2 ae runs:" in log and "images/s over 2 epochs" in log  # for RESULTS.md
    grid = json.loads((tmp_path / "work" / "runs-ae-s0" / "grid.json").read_text())
    assert grid["generator"]["version"] >= 2 and grid["generator"]["seed"] == 0 and grid["protocol_seeds"] == [0]
