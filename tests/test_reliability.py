"""Reliability (issue 7): an interrupted grid loses nothing, damaged files are never silently used, a messy
data folder and bad arguments get clear one-line answers, a full disk and a second writer are refused cleanly.

Every test adds what it really tried to the ``reliability`` counters (tests/conftest.py), printed as one line
at the end of the session. The default run kills the smoke grid 5 times; ``RELIABILITY_KILLS=N`` changes that
and ``pytest -m slow`` adds a 12-kill variant.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from forked_cli import WAIT, Proc
from PIL import Image

import src.runs as R
import src.train as T
import src.utils as U
from src import sample, synthetic
from src.__main__ import build_parser, main
from src.checkpoint import CorruptFile, load_torch
from src.data import load_images
from src.distributed import RunLock
from src.config import PRESETS
from src.distributed import grid_lock
from src.experiments import check_output_dir, run_grid
from src.results import read_history, read_metrics
from src.utils import UserError, atomic_path

KILLS = int(os.environ.get("RELIABILITY_KILLS", "5"))
SMOKE = ["--preset", "smoke", "--no-progress", "--device", "cpu"]
TEMP = re.compile(r"\..+\.tmp(\.\w+)?")  # atomic_path: .<name>.<random>.tmp; report figures: .<stem>.tmp.png


# ----------------------------------------------------------------------------- helpers
def cli(argv, capsys) -> tuple[int, list[str], str]:
    """``main(argv)`` in-process, seen as a user sees it: (exit code, stderr lines, stdout); warnings on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    cap = capsys.readouterr()
    return code, cap.err.splitlines(), cap.out


def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (links not followed): size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def check_artifacts(*roots: Path) -> tuple[int, list[Path]]:
    """Assert every result-looking file under ``roots`` is complete; return (files checked, temp files).

    A JSON parses, a checkpoint loads (zip CRCs included), an .npz/.npy reads every array, a CSV has
    full rows, a PNG decodes; a run with metrics.json (written last) has all its other files.
    """
    checked, temps = 0, []
    for root in roots:
        for p in sorted(root.rglob("*")) if root.exists() else []:
            if not p.is_file():
                continue
            if TEMP.fullmatch(p.name):
                temps.append(p)
                continue
            ext = p.suffix
            if ext == ".json":
                json.loads(p.read_text(encoding="utf-8"))
            elif ext == ".pt":
                load_torch(p)
            elif ext == ".npz":
                with np.load(p) as z:
                    [z[k] for k in z.files]
            elif ext == ".npy":
                np.load(p, allow_pickle=False)
            elif ext == ".csv":
                with open(p, newline="") as f:
                    rows = list(csv.reader(f))
                assert all(len(r) == len(rows[0]) for r in rows), p
            elif ext == ".png":
                with Image.open(p) as im:
                    im.load()
            elif ext == ".md":
                p.read_text(encoding="utf-8")
            else:
                continue
            checked += 1
        for m in root.rglob("metrics.json"):
            for name in ("config.json", "split.npz", "best.pt", "per_image.npz"):  # last.pt: removed once evaluated
                assert (m.parent / name).is_file(), f"{m} exists but {name} does not"
    return checked, temps


def same(a, b) -> bool:
    """Deep equality of loaded checkpoints (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def comparable_summary(s: dict) -> dict:
    """What must be identical between two runs of the same grid on the same machine: everything but the
    wall-clock start time in "grid" (the device, torch version, dataset, preset and sizes stay)."""
    return {**s, "grid": {k: v for k, v in s["grid"].items() if k != "started"}}


def zip_records(path: Path) -> list[range]:
    """Byte ranges of the stored records (data.pkl, one per tensor, ...) of a torch zip checkpoint."""
    raw = path.read_bytes()
    out = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():  # local header: 30 bytes, then the name and the extra field
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            out.append(range(start, start + info.compress_size))
    return out


def tensor_middle(path: Path) -> int:
    """The middle byte of the biggest record of a checkpoint: inside tensor data."""
    largest = max(zip_records(path), key=len)
    return largest.start + len(largest) // 2


def flip(path: Path, pos: int, n: int = 1) -> None:
    b = bytearray(path.read_bytes())
    for i in range(pos, pos + n):
        b[i] ^= 0xA5
    path.write_bytes(bytes(b))


@contextlib.contextmanager
def disk_full(monkeypatch, name: str, after: int = 0, on_fail=None):
    """Writes of files called ``name``, after the first ``after``, hit a full disk.

    atomic_path's temp file is then a link to /dev/full, so the kernel itself answers ENOSPC to the real
    write calls of whatever writer is used (torch, numpy, json). ``on_fail()`` runs just before.
    """
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    real = U._new_temp
    state = {"seen": 0, "failed": 0}

    def new_temp(path):
        fail = path.name == name and state["seen"] >= after
        state["seen"] += path.name == name
        if fail and on_fail:
            on_fail()
        tmp = real(path)
        if fail:
            os.unlink(tmp)
            os.symlink("/dev/full", tmp)
            state["failed"] += 1
        return tmp

    with monkeypatch.context() as m:
        m.setattr(U, "_new_temp", new_temp)
        yield state


@pytest.fixture(scope="module")
def faces(smoke_grid) -> Path:
    """60 generated faces (the smoke preset uses the first 48); read only."""
    return smoke_grid / "faces"


@pytest.fixture(scope="module")
def smoke(smoke_grid):
    """The session's uninterrupted ``reproduce --preset smoke`` (tests/conftest.py: its own process, CPU, one
    torch thread, like every ``Proc`` here), with the steps of its timed log."""
    summary = json.loads((smoke_grid / "runs" / "summary.json").read_text())
    assert len(summary["runs"]) == 16
    log = json.loads((smoke_grid / "reproduce_log.json").read_text())
    return SimpleNamespace(root=smoke_grid, data=smoke_grid / "faces", ref=smoke_grid / "runs", summary=summary,
                           cache=smoke_grid / "data", phases=phases(log["lines"], log["seconds"]))


def phase_key(line: str) -> str:
    """The step of reproduce a log line starts: a run's name, or the line's first word (data, rd, report, ...)."""
    m = re.match(r"\[\d+/\d+\] (\S+)", line)
    if m:
        return m[1]
    return "todo" if "already finished" in line else line.split(":")[0].split()[0]


def phases(lines: list[tuple[float, str]], end: float) -> list[list]:
    """[key, start, end] of each step of a run, from its timestamped log lines (steps of one line merged)."""
    out: list[list] = []
    for t, line in lines:
        key = phase_key(line)
        if out and out[-1][0] == key:
            continue
        if out:
            out[-1][2] = t
        out.append([key, t, end])
    return out


@pytest.fixture
def every_epoch(monkeypatch):
    """``train`` checkpoints after every epoch (fit may save less often to spare time on big models), so
    that a failure in epoch 2 has epoch 1's checkpoint to protect."""
    real = T.fit

    def fit(cfg, *args, **kwargs):
        if hasattr(cfg.train, "checkpoint_s"):
            cfg.train.checkpoint_s = 0
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(T, "fit", fit)


def train_args(data, *extra):
    return ["train", "--data", data, "--limit", "48", "--image-size", "32", "--batch-size", "16",
            "--no-progress", "--device", "cpu", *extra]


# ----------------------------------------------------------------------------- 1. kill and resume
def kill_and_resume(smoke, tmp_path, reliability, n_kills: int, seed: int):
    out, cwd = tmp_path / "out", tmp_path
    args = ["reproduce", *SMOKE, "--data", smoke.data, "--out", out]
    rng = random.Random(seed)
    steps = smoke.phases
    index = {key: i for i, (key, _, _) in enumerate(steps)}
    start, end = steps[0][1], steps[-1][2]
    # One kill moment in each of n equal slices of the uninterrupted run (after its start-up), located by the
    # step it falls in (a run's training, the curves, the report) and its offset in that step, so that the
    # restarts, which redo nothing finished, are killed at that point of the work whatever the machine's load.
    targets = []
    for i in range(n_kills):
        moment = start + rng.uniform(i + 0.05, i + 0.95) * (end - start) / n_kills
        step = max(k for k, (_, t0, _) in enumerate(steps) if t0 <= moment)
        targets.append((step, moment - steps[step][1]))
    kills, junked, log = 0, {}, []
    while kills < n_kills:
        assert len(log) < 3 * n_kills, "the grid kept finishing before the kill moments"
        step, offset = targets[min(kills, n_kills - 1)]
        proc, seen, trigger = Proc(args, cwd), 0, None
        while proc.poll() is None:
            for _, line in proc.out[seen:]:
                at = index.get(phase_key(line), -1)
                if trigger is None and at >= step:  # a later step: the target one had nothing left to do
                    delay = offset if at == step else rng.uniform(0, steps[at][2] - steps[at][1])
                    trigger, hit = time.monotonic() + delay, f"{steps[at][0]} + {delay:.2f}s"
            seen = len(proc.out)
            if trigger is not None and time.monotonic() >= trigger:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        rc = proc.wait()
        if rc == -signal.SIGKILL:
            kills += 1
            reliability["kills"] += 1
            log.append(f"kill {kills} at {hit}, during: {proc.last_line()}")
        else:
            assert rc == 0, proc.err[-10:]
            log.append("finished before its kill moment")
            tail = time.monotonic() - proc.t0 - proc.out[0][0]  # the grid is done: kill its re-runs
            targets[kills:] = [(0, rng.uniform(0.05, 0.95) * tail) for _ in targets[kills:]]
        # nothing a kill left behind may look complete without being complete
        checked, temps = check_artifacts(out, cwd / "data")
        reliability["intact"] += checked
        for t in temps:  # temp files may stay; fill them with junk: if any were ever read or renamed, the
            if t not in junked:  # results below would differ or fail to load
                junk = os.urandom(max(64, t.stat().st_size))
                t.write_bytes(junk)
                junked[t] = junk
    proc = Proc(args, cwd)
    assert proc.wait() == 0, proc.err[-10:]
    print(f"\n{kills} SIGKILLs (seed {seed}, uninterrupted run {end:.1f}s):\n  " + "\n  ".join(log))

    final = json.loads((out / "summary.json").read_text())
    assert final["runs"] == smoke.summary["runs"]  # every metric of every run, exactly
    assert comparable_summary(final) == comparable_summary(smoke.summary)
    for run in smoke.summary["runs"]:
        a, b = out / run["run"], smoke.ref / run["run"]
        assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
        assert same(load_torch(a / "best.pt")["model"], load_torch(b / "best.pt")["model"])
        assert without_seconds(read_history(a)) == without_seconds(read_history(b))
        reliability["intact"] += 3
    checked, temps = check_artifacts(out, cwd / "data")
    assert set(temps) <= set(junked), "a finished run left temp files of its own"
    for t, junk in junked.items():  # never renamed into place, never rewritten
        assert not t.exists() or t.read_bytes() == junk
    return kills


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(smoke, tmp_path, reliability):
    assert kill_and_resume(smoke, tmp_path, reliability, max(5, KILLS), seed=7) >= 5


@pytest.mark.slow
def test_many_sigkills(smoke, tmp_path, reliability):
    assert kill_and_resume(smoke, tmp_path, reliability, max(12, KILLS), seed=11) >= 12


# ----------------------------------------------------------------------------- 2. corrupt artifacts
def test_garbled_or_truncated_checkpoint_never_loads_silently(smoke, tmp_path, reliability):
    src = smoke.ref / "ae-l2-clean-s0" / "last.pt"
    raw = src.read_bytes()
    original = torch.load(src, weights_only=False)
    records = zip_records(src)  # the pickle and the tensors: what torch.load reads, without checking
    middle = tensor_middle(src)
    positions = sorted(set(random.Random(3).sample(range(len(raw)), min(len(raw), 250)))
                       | set(range(middle - 8, middle + 8)))
    bad = tmp_path / "last.pt"
    detected = harmless = 0
    for pos in positions:
        bad.write_bytes(raw)
        flip(bad, pos)
        reliability["corrupted"] += 1
        try:
            loaded = load_torch(bad)
        except CorruptFile as e:
            assert str(bad) in str(e)
            detected += 1
        else:  # only bytes nothing reads (zip header padding, timestamps) may change without notice
            assert same(loaded, original), f"byte {pos} garbled the checkpoint silently"
            assert not any(pos in r for r in records), f"a flip at {pos}, inside a stored record, was not detected"
            harmless += 1
    assert detected >= 16
    for n in (0, 1, 30, len(raw) // 4, middle, len(raw) - 22, len(raw) - 1):
        bad.write_bytes(raw[:n])
        reliability["corrupted"] += 1
        with pytest.raises(CorruptFile, match="not a readable checkpoint"):
            load_torch(bad)


def test_corrupt_artifacts_are_detected_and_redone_with_a_warning(smoke, tmp_path, monkeypatch, reliability):
    out = tmp_path / "out"
    shutil.copytree(smoke.ref, out)
    shutil.copytree(smoke.cache, tmp_path / "data")  # the decoded-image cache, relative to the working folder
    monkeypatch.chdir(tmp_path)
    damaged = {}

    def damage(run, what, how, expect):
        damaged[run] = expect
        reliability["corrupted"] += 1
        p = out / run / what
        if how == "truncate":
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        elif how == "delete":
            p.unlink()
        else:
            flip(p, tensor_middle(p), 4)

    damage("ae-none-clean-s0", "last.pt", "truncate", r"last\.pt is not a readable checkpoint")
    (out / "ae-none-clean-s0" / "metrics.json").unlink()
    history = out / "ae-none-clean-s0" / "history.csv"  # killed before the last row: resuming needs last.pt
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))
    damage("vae-l1-clean-s0", "best.pt", "garble", r"best\.pt is not a readable checkpoint.*checksum")
    (out / "vae-l1-clean-s0" / "metrics.json").unlink()
    damage("vae-l2-clean-s0", "best.pt", "delete", r"best\.pt is not a readable checkpoint")
    (out / "vae-l2-clean-s0" / "metrics.json").unlink()
    damage("ae-l2-noise0.1-s0", "metrics.json", "truncate", r"metrics\.json is not valid JSON")
    # a garble that leaves valid JSON: one digit of a stored metric
    m = out / "vae-none-noise0.1-s0" / "metrics.json"
    text = m.read_text()
    value = repr(json.loads(text)["test"]["clean"]["mse"])
    digit = next(i for i, c in enumerate(value) if c in "123456789")
    changed = value[:digit] + str(int(value[digit]) % 9 + 1) + value[digit + 1:]
    assert text.count(value) >= 1 and changed != value
    m.write_text(text.replace(value, changed, 1))
    damaged["vae-none-noise0.1-s0"] = r"metrics\.json fails its checksum"
    reliability["corrupted"] += 1
    npy = next((tmp_path / "data" / ".cache").glob("*.npy"))
    flip(npy, npy.stat().st_size // 2)
    reliability["corrupted"] += 1
    untouched = {r["run"]: file_bytes(out / r["run"]) for r in smoke.summary["runs"] if r["run"] not in damaged}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference grid ran: the same float32 sums, so equal means bit for bit
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            summary = run_grid(PRESETS["smoke"], out, data_root=str(smoke.data), device="cpu", progress=False,
                               log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    messages = [str(w.message) for w in rec]
    for run, expect in damaged.items():
        assert any(run in msg and re.search(expect, msg) for msg in messages), (run, messages)
    assert any("cache" in msg and "corrupt" in msg and "rebuilding" in msg for msg in messages), messages
    # redone, not reused: every metric equals the uninterrupted run's, and finished runs were not touched
    assert summary["runs"] == smoke.summary["runs"]
    for run in damaged:
        assert read_metrics(out / run) is not None and load_torch(out / run / "best.pt")
    for run, files in untouched.items():
        assert file_bytes(out / run) == files
        reliability["intact"] += 1
    reliability["intact"] += len(damaged)


def test_corrupt_best_checkpoint_is_a_one_line_error_in_evaluate(smoke, tmp_path, monkeypatch, capsys, reliability):
    run = tmp_path / "run"
    shutil.copytree(smoke.ref / "vae-l2-noise0.1-s0", run)
    monkeypatch.chdir(smoke.root)
    flip(run / "best.pt", tensor_middle(run / "best.pt"))
    reliability["corrupted"] += 1
    metrics = (run / "metrics.json").read_bytes()
    code, err, _ = cli(["evaluate", run, "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert str(run / "best.pt") in err[0] and "checksum" in err[0]
    assert (run / "metrics.json").read_bytes() == metrics  # the old result is neither replaced nor deleted
    reliability["intact"] += 1


# ----------------------------------------------------------------------------- 3. a bad data folder
def test_bad_data_folder_through_the_cli(tmp_path, monkeypatch, capsys, reliability):
    bad = tmp_path / "messy"
    bad.mkdir()
    good = []
    for i in range(6):
        Image.fromarray(synthetic.face(i, size=64)).save(bad / f"face{i}.png")
        good.append(f"face{i}.png")
    face = synthetic.face(6, size=64)
    Image.fromarray(face.astype(np.uint16) * 257).save(bad / "face_16bit.png")
    assert Image.open(bad / "face_16bit.png").mode.startswith("I")
    Image.fromarray(np.dstack([face] * 3)).convert("CMYK").save(bad / "face_cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    Image.fromarray(synthetic.face(7, size=64)[:, 8:56]).save(bad / "face_exif.jpg", exif=exif.tobytes())
    good += ["face_16bit.png", "face_cmyk.jpg", "face_exif.jpg"]
    Image.fromarray(face).save(bad / "trunc.png")
    (bad / "trunc.png").write_bytes((bad / "trunc.png").read_bytes()[:300])
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("this is a text file, not a PNG\n")
    png = (bad / "face0.png").read_bytes()  # IHDR patched to claim 30,000 x 30,000 pixels, CRC fixed
    ihdr = bytearray(png[:33])
    ihdr[16:24] = struct.pack(">II", 30000, 30000)
    ihdr[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr[12:29])))
    (bad / "bomb.png").write_bytes(bytes(ihdr) + png[33:])
    Image.new("L", (1, 1), 128).save(bad / "tiny.png")
    (bad / ".hidden.png").write_bytes(png)
    (bad / ".DS_Store").write_bytes(os.urandom(64))
    os.symlink(bad, bad / "loop", target_is_directory=True)
    try:
        with open(os.path.join(os.fsencode(bad), b"face\xff.png"), "wb") as f:
            f.write(png)
        nonutf8 = True
    except OSError:
        nonutf8 = False  # a file system that refuses such names cannot hold one
    expected = {"trunc.png": r"decode|truncated", "empty.png": "empty", "text.png": "not an image",
                "bomb.png": "decompression-bomb", "tiny.png": "too small: 1x1", "loop": "loop"}
    if nonutf8:
        expected["face\\xff.png"] = "not valid UTF-8"
    reliability["bad_inputs"] += len(expected) + 2 + 3  # + hidden files + 16-bit, CMYK and EXIF-rotated images
    before = snapshot(bad)
    monkeypatch.chdir(tmp_path)

    out = tmp_path / "run"
    code, err, _ = cli(["train", "--data", bad, "--epochs", "1", "--image-size", "32", "--batch-size", "4",
                        "--out", out, "--no-progress", "--device", "cpu"], capsys)
    assert code == 0, err
    assert snapshot(bad) == before  # nothing written, renamed or touched in the image folder
    split = np.load(out / "split.npz")
    assert sum(len(split[k]) for k in ("train", "val", "test")) == len(good)  # every valid image kept
    # the loader's full report (from the cache the CLI wrote): every skipped file with its reason, every valid image
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fs = load_images(bad, 32, progress=False)
    assert fs.files == sorted(good)
    reasons = {s.path: s.reason for s in fs.skipped}
    assert set(reasons) == set(expected)
    for name, pattern in expected.items():
        assert re.search(pattern, reasons[name]), (name, reasons[name])
    # the CLI's one warning: the count, then the first files with their reasons
    assert len(err) == 1 and err[0].startswith(f"warning: skipped {len(expected)} bad files in {bad}: "), err
    shown = [name for name in expected if f"{name} ({reasons[name]})" in err[0]]
    assert len(shown) == min(5, len(expected)), err[0]
    if len(expected) > 5:
        assert f"and {len(expected) - 5} more" in err[0]
    assert snapshot(bad) == before


# ----------------------------------------------------------------------------- 4. bad arguments
@pytest.fixture
def workspace(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    sample.write_sample(ws / "faces", n=12, seed=0, size=32, progress=False)
    (ws / "empty").mkdir()
    (ws / "empty" / "notes.txt").write_text("no images here")
    (ws / "taken.txt").write_text("an existing file")
    monkeypatch.chdir(ws)
    return ws


TRAIN = ["train", "--data", "faces", "--out", "out", "--image-size", "32", "--epochs", "1", "--no-progress",
         "--device", "cpu"]
BAD_ARGS = [
    ("zero epochs", [*TRAIN, "--epochs", "0"], r"--epochs.*>= 1"),
    ("negative epochs", [*TRAIN, "--epochs", "-3"], r"--epochs.*>= 1"),
    ("unknown model", [*TRAIN, "--model", "gan"], r"--model.*'gan'"),
    ("unknown regularizer", [*TRAIN, "--reg", "l3"], r"--reg.*'l3'"),
    ("negative training sigma", [*TRAIN, "--noise-train", "-0.1"], r"--noise-train.*>= 0"),
    ("negative evaluation sigma", ["evaluate", "out", "--noise", "-0.5"], r"--noise.*>= 0"),
    ("zero learning rate", [*TRAIN, "--lr", "0"], r"--lr \(learning rate\) must be > 0"),
    ("split not summing to 1", [*TRAIN, "--split", "0.5,0.1,0.2"], r"split.*summing to 1"),
    ("split of two parts", [*TRAIN, "--split", "0.7,0.3"], r"split must be three"),
    ("split not numbers", [*TRAIN, "--split", "a,b,c"], r"--split"),
    ("--out is a file (train)", [*TRAIN, "--out", "taken.txt"], r"taken\.txt is an existing file"),
    ("--out is a file (reproduce)", ["reproduce", *SMOKE, "--data", "faces", "--out", "taken.txt"],
     r"taken\.txt is an existing file"),
    ("missing data folder", [*TRAIN, "--data", "nowhere"], r"no image folder at nowhere"),
    ("empty data folder", [*TRAIN, "--data", "empty"], r"no image files .* in empty"),
    ("unknown preset", ["reproduce", "--preset", "huge", "--out", "out"], r"--preset.*'huge'"),
    ("evaluate a missing run", ["evaluate", "nowhere"], r"nowhere is not a run folder"),
]


@pytest.mark.parametrize("argv, problem", [c[1:] for c in BAD_ARGS], ids=[c[0] for c in BAD_ARGS])
def test_bad_argument_is_one_line_exit_2_and_writes_nothing(workspace, capsys, reliability, argv, problem):
    before = snapshot(workspace)
    reliability["bad_args"] += 1
    code, err, _ = cli(argv, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(problem, err[0]), err[0]
    assert snapshot(workspace) == before


def test_read_only_output_folder(workspace, capsys, reliability):
    """A real OS permission check. As root, chmod does not stop writes and os.access says yes, so the
    CLI runs in a forked child that has dropped to the unprivileged user 65534 (the real-uid access check
    then fails as it would for any user); a writable folder in the same child is the control."""
    base = Path(tempfile.mkdtemp(prefix="reliability-ro-"))  # outside pytest's root-only temp folder
    ro, rw = base / "ro", base / "rw"
    try:
        os.chmod(base, 0o755)
        ro.mkdir()
        rw.mkdir()
        os.chmod(ro, 0o555)
        os.chmod(rw, 0o777)
        before = snapshot(base)
        argv = [*TRAIN, "--out", ro / "run"]
        reliability["bad_args"] += 1
        if os.geteuid() != 0:
            code, err, _ = cli(argv, capsys)
            check_output_dir(rw / "run")
        else:
            code, err = as_nobody(lambda: main([str(a) for a in argv]))
            assert as_nobody(lambda: check_output_dir(rw / "run") or 0) == (0, [])  # control: writable is fine
        assert code == 2 and len(err) == 1, err
        assert re.match(rf"error: --out {re.escape(str(ro / 'run'))} is not writable", err[0]), err
        assert snapshot(base) == before
    finally:
        if ro.exists():
            os.chmod(ro, 0o755)
        shutil.rmtree(base)


def as_nobody(fn) -> tuple[int, list[str]]:
    """Run ``fn()`` in a forked child as uid/gid 65534; return (its return value as exit code, stderr lines)."""
    # Imports every module the CLI needs and reads the config's source for the help texts now: that user may
    # not read the Python installation, nor a checkout in a 0700 folder (a clone in root's home).
    build_parser()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 99
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = os.fdopen(w, "w", buffering=1)
            code = fn()
            sys.stderr.flush()
        except BaseException as e:  # noqa: BLE001 - reported to the parent through the pipe
            with contextlib.suppress(Exception):
                sys.stderr.write(f"child raised {type(e).__name__}: {e}\n")
                sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 98)
    os.close(w)
    with os.fdopen(r) as f:
        err = f.read().splitlines()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


# ----------------------------------------------------------------------------- 5. concurrency
def held_runs(out: Path) -> list[str]:
    """Runs of ``out`` whose lock another process holds (tested with a lock of our own, let go at once)."""
    held = []
    for d in sorted(out.iterdir()) if out.is_dir() else []:
        if (d / ".lock").is_file():
            with RunLock(d) as lock:
                if not lock.acquire():
                    held.append(d.name)
    return held


def test_second_reproduce_shares_the_grid_and_one_of_another_grid_is_refused(faces, smoke, tmp_path, reliability):
    """Issue 14: a second ``reproduce`` of the same grid on the same --out shares the work (each run has its own
    lock): it trains what the first does not hold, waits for the run the first holds, and finishes it when the
    first dies. A ``reproduce`` of another grid gets the one-line error and writes nothing."""
    out = tmp_path / "out"
    args = ["reproduce", *SMOKE, "--data", faces, "--out", out]
    first, second = Proc(args, tmp_path), None
    try:
        deadline = time.monotonic() + WAIT
        while True:  # stop the first while it holds a run, mid-grid, for as long as this test needs
            assert first.poll() is None and time.monotonic() < deadline, first.err[-5:]
            first.send_signal(signal.SIGSTOP)
            while Path(f"/proc/{first.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
                time.sleep(0.001)  # stopped for sure: what it holds now, it holds until SIGCONT
            held = held_runs(out)
            if held:
                break
            first.send_signal(signal.SIGCONT)
            time.sleep(0.02)
        before = snapshot(out)
        other = Proc(["reproduce", *SMOKE, "--seeds", "2", "--data", faces, "--out", out], tmp_path)
        reliability["other_faults"] += 1
        assert other.wait() == 2
        assert len(other.err) == 1 and other.err[0].startswith("error: another process is writing"), other.err
        assert f"pid {first.pid} " in other.err[0] and str(out) in other.err[0]
        with pytest.raises(UserError, match="another process is writing"), grid_lock(out):  # in one process too
            pass
        assert snapshot(out) == before  # the refused writers wrote nothing
        reliability["intact"] += 1
        second = Proc(args, tmp_path)
        while not any(line.endswith("waiting for it") for _, line in second.out):
            assert second.poll() is None and time.monotonic() < deadline, second.err[-5:]
            time.sleep(0.02)
    finally:
        first.send_signal(signal.SIGKILL)
        first.send_signal(signal.SIGCONT)
        first.wait()
    assert second.wait() == 0, second.err[-10:]  # it finished the run the killed first held
    final = json.loads((out / "summary.json").read_text())
    assert comparable_summary(final) == comparable_summary(smoke.summary)
    assert all((out / run / ".lock").read_text().startswith(f"pid {second.pid} ") for run in held)
    reliability["intact"] += 1
    with grid_lock(out):  # the locks die with their holders
        pass


def test_two_launches_of_a_finished_grid_write_the_curves_and_report_one_after_the_other(smoke_copy, faces,
                                                                                         reliability):
    """After the runs, a launch computes the curves and writes the report alone: a second launch that gets
    there meanwhile says whom it waits for and waits (this test holds the lock, as such a launch would)."""
    from src.distributed import one_at_a_time

    out = smoke_copy / "runs"
    report = out / "REPORT.md"
    before = report.stat().st_mtime_ns
    with one_at_a_time(out / ".lock.report", "test"):
        proc = Proc(["reproduce", *SMOKE, "--data", faces, "--out", out], smoke_copy)
        deadline = time.monotonic() + WAIT
        while not any(line.startswith("curves and report: waiting for pid ") for _, line in proc.out):
            assert proc.poll() is None and time.monotonic() < deadline, (proc.out[-3:], proc.err[-5:])
            time.sleep(0.02)
        waiting = next(line for _, line in proc.out if "waiting for" in line)
        assert f"pid {os.getpid()} on " in waiting and waiting.endswith(" to finish")
        time.sleep(0.3)
        assert proc.poll() is None and report.stat().st_mtime_ns == before  # still waiting, nothing written
        reliability["other_faults"] += 1
    assert proc.wait() == 0, proc.err[-10:]
    assert report.stat().st_mtime_ns > before and any(line.startswith("report: ") for _, line in proc.out)
    reliability["intact"] += 1


# ----------------------------------------------------------------------------- 6. divergence
def test_divergence_names_the_epoch_and_keeps_the_last_good_checkpoint(faces, tmp_path, monkeypatch, capsys,
                                                                       reliability, every_epoch):
    monkeypatch.chdir(tmp_path)
    vae = train_args(faces, "--model", "vae", "--epochs", "3")
    code, err, _ = cli([*vae, "--lr", "1e3", "--out", tmp_path / "a"], capsys)
    reliability["other_faults"] += 1
    assert code == 2 and len(err) == 1, err
    epoch = int(re.match(r"error: training diverged at epoch (\d+) .*lower the learning rate", err[0])[1])
    if epoch == 1:
        assert not (tmp_path / "a" / "last.pt").exists() and not (tmp_path / "a" / "best.pt").exists()
    else:
        assert load_torch(tmp_path / "a" / "last.pt")["epoch"] == epoch - 1

    # a good first epoch, then lr = 1e3: epoch 1's checkpoint must survive byte for byte
    run, saved = tmp_path / "b", {}
    real = T.train_one_epoch

    def hot(model, optimizer, data, cfg, epoch):
        if epoch == 2:
            saved.update(file_bytes(run))
            for group in optimizer.param_groups:
                group["lr"] = 1e3
        return real(model, optimizer, data, cfg, epoch)

    monkeypatch.setattr(T, "train_one_epoch", hot)
    code, err, _ = cli([*vae, "--out", run], capsys)
    reliability["other_faults"] += 1
    assert code == 2 and len(err) == 1, err
    assert re.match(rf"error: training diverged at epoch 2 .*last good checkpoint is {re.escape(str(run / 'last.pt'))}"
                    r" \(epoch 1\)", err[0]), err[0]
    assert file_bytes(run) == saved
    last = load_torch(run / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values())
    assert load_torch(run / "best.pt")["epoch"] == 1
    reliability["intact"] += 1


# ----------------------------------------------------------------------------- 7. disk full
def test_disk_full_keeps_earlier_results_and_says_what_happened(faces, tmp_path, monkeypatch, capsys, reliability,
                                                                every_epoch):
    monkeypatch.chdir(tmp_path)
    args = train_args(faces, "--epochs", "3")
    run, frozen = tmp_path / "run", {}

    def freeze():
        frozen.clear()
        frozen.update(file_bytes(run))

    # training: the checkpoint of epoch 2 meets a full disk
    with disk_full(monkeypatch, "last.pt", after=1, on_fail=freeze) as state:
        code, err, _ = cli([*args, "--out", run], capsys)
    assert state["failed"] == 1
    reliability["failed_writes"] += 1
    assert code == 2 and len(err) == 1, err
    assert re.match(rf"error: no space left on device: {re.escape(str(run / 'last.pt'))}; .*free some space", err[0])
    assert frozen and file_bytes(run) == frozen  # nothing changed by the failed write, no temp file left
    assert load_torch(run / "last.pt")["epoch"] == 1 and load_torch(run / "best.pt")
    reliability["intact"] += 1
    # space is back: resuming ends exactly where an uninterrupted run ends
    code, err, _ = cli([*args, "--out", run, "--resume"], capsys)
    assert code == 0, err
    code, err, _ = cli([*args, "--out", tmp_path / "ref"], capsys)
    assert code == 0, err
    for name in ("best.pt", "last.pt"):
        assert same(load_torch(run / name)["model"], load_torch(tmp_path / "ref" / name)["model"])
    assert without_seconds(read_history(run)) == without_seconds(read_history(tmp_path / "ref"))
    reliability["intact"] += 1

    # evaluation: a full disk at either of its two files leaves the previous result as it was
    code, err, _ = cli(["evaluate", run, "--no-progress", "--device", "cpu"], capsys)
    assert code == 0, err
    previous = read_metrics(run)
    for name in ("per_image.npz", "metrics.json"):
        with disk_full(monkeypatch, name, on_fail=freeze) as state:
            code, err, _ = cli(["evaluate", run, "--no-progress", "--device", "cpu"], capsys)
        assert state["failed"] == 1
        reliability["failed_writes"] += 1
        assert code == 2 and len(err) == 1, err
        assert re.match(rf"error: no space left on device: {re.escape(str(run / name))}; ", err[0]), err[0]
        assert file_bytes(run) == frozen
        assert read_metrics(run) == previous
        reliability["intact"] += 1


def test_other_write_errors_are_one_line_too(faces, tmp_path, monkeypatch, capsys, reliability):
    """Quota, read-only file system: the same one line, naming the file and what to do."""
    monkeypatch.chdir(tmp_path)
    real = R.save_torch
    for err_no, fix in ((errno.EDQUOT, "free some space"), (errno.EROFS, "choose a writable --out")):
        run = tmp_path / f"run{err_no}"

        def failing(obj, path, err_no=err_no):
            if path.name != "best.pt":
                return real(obj, path)
            with atomic_path(path) as tmp:  # half written, then the file system says no
                tmp.write_bytes(b"PK" + os.urandom(100))
                raise OSError(err_no, os.strerror(err_no))

        monkeypatch.setattr(R, "save_torch", failing)  # where RunState.save writes checkpoints
        code, err, _ = cli([*train_args(faces, "--epochs", "1"), "--out", run], capsys)
        reliability["failed_writes"] += 1
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: {os.strerror(err_no).lower()}: {run / 'best.pt'}; ") and fix in err[0]
        assert sorted(p.name for p in run.iterdir()) == ["config.json", "split.npz"]  # no half file, no temp file
