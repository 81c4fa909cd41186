"""What a user watching (or not) sees: progress bars only where someone looks, a log of lines otherwise."""
import io
import json
import sys
import types

import pytest

from src import utils


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _drawn(monkeypatch, *, tty: bool, notebook: bool, show: bool = True, inner: bool = False) -> str:
    stream = _Stream(tty)
    monkeypatch.setattr(utils, "in_notebook", lambda: notebook)
    for _ in utils.progress_bar(range(3), show=show, inner=inner, file=stream, mininterval=0):
        pass
    return stream.getvalue()


def test_bars_only_on_a_terminal_or_in_a_notebook(monkeypatch):
    assert "3/3" in _drawn(monkeypatch, tty=True, notebook=False)
    assert _drawn(monkeypatch, tty=False, notebook=False) == ""  # a log file: nothing
    assert _drawn(monkeypatch, tty=True, notebook=False, show=False) == ""  # --no-progress
    # a notebook: the run's bar, not the per-batch ones
    assert "3/3" in _drawn(monkeypatch, tty=False, notebook=True)
    assert _drawn(monkeypatch, tty=False, notebook=True, inner=True) == ""


def test_in_notebook_means_an_ipykernel_stream(monkeypatch):
    assert not utils.in_notebook()  # pytest's captured stderr
    fake = types.ModuleType("ipykernel.iostream")
    OutStream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    monkeypatch.setitem(sys.modules, "ipykernel", fake)
    monkeypatch.setattr(sys, "stderr", OutStream())
    assert utils.in_notebook()


def test_a_redirected_smoke_reproduce_writes_a_short_log_of_lines(smoke_grid):
    """reproduce --preset smoke with stdout and stderr to files (no --no-progress): no bar redraws, one line
    per finished run, well under 50 KB."""
    log = json.loads((smoke_grid / "reproduce_log.json").read_text())
    out, err = [line for _, line in log["lines"]], log["stderr"]
    size = sum(len(line.encode()) + 1 for line in out + err)
    assert size < 50_000, size
    assert not any("\r" in line for line in out + err)  # tqdm redraws with carriage returns
    finished = [line for line in out if " epochs (" in line and "best epoch" in line]
    assert len(finished) == 16, out  # the smoke grid's 16 runs, one line each


# ----------------------------------------------------------------------------- the ETA
def _run(root, name, model, seed, seconds=None, wall=None):
    """A run folder: config.json, and with ``seconds`` a history of 3 timed epochs; with ``wall`` its
    metrics.json, written ``wall`` seconds after its config.json."""
    import os

    from src.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from src.utils import write_json

    cfg = RunConfig(model=ModelConfig(name=model, image_size=32), train=TrainConfig(epochs=3, seed=seed),
                    data=DataConfig(image_size=32, n_images=100))
    d = root / name
    write_json(d / "config.json", cfg.to_dict())
    if seconds is not None:
        (d / "history.csv").write_text("epoch,val_loss,seconds\n" + "".join(f"{e},1.0,{seconds}\n" for e in (1, 2, 3)))
    if wall is not None:
        write_json(d / "metrics.json", {})
        os.utime(d / "config.json", (1000.0, 1000.0))
        os.utime(d / "metrics.json", (1000.0 + wall, 1000.0 + wall))
    return cfg


def test_the_eta_is_calibrated_on_the_timed_epochs_and_counts_the_rate_distortion_step(tmp_path):
    from src.config import RDConfig
    from src.eta import MODEL_COST, REPORT_S, After, clock, read_events
    from src.experiments import GridProgress, Unit

    # two AE runs done: epochs of 2 s, 10 s from config.json to metrics.json: 6 s of epochs + 4 s of the rest
    configs = {"ae-a": _run(tmp_path, "ae-a", "ae", 0, 2.0, 10.0), "ae-b": _run(tmp_path, "ae-b", "ae", 1, 2.0, 10.0),
               "ae-c": _run(tmp_path, "ae-c", "ae", 2), "vae-d": _run(tmp_path, "vae-d", "vae", 0)}
    units = [Unit(("ae-c",), True, 0.0), Unit(("vae-d",), True, 0.0)]
    assert GridProgress(tmp_path, configs, units).seconds_left() == pytest.approx(10 + 10 * MODEL_COST["vae"])
    # the step after the grid: one extra VAE size, 3 epochs at the VAE's borrowed rate (2 s x cost ratio), and
    # 5 points to code: (2 models + 1 size) x 1 b + 1 PCA (k, b) + 1 JPEG; each a pass over the 20 test images
    # at the rest-of-run rate (4 s for 2 conditions x 30 val + test images): 20 / 30 x 4 / 2 = 4/3 s
    rd = RDConfig(bits=(4,), pca_k=(4,), jpeg=(50,), webp=(), jpeg2000=(), vae_latents=(8,))
    grid = GridProgress(tmp_path, configs, units, After(rd))
    expected = 10 + 10 * MODEL_COST["vae"] + 3 * 2 * MODEL_COST["vae"] + 5 * 4 / 3 + REPORT_S  # and the report
    assert grid.seconds_left() == pytest.approx(expected)
    text = grid.line("ae-c")
    assert text == f"grid: 2/4 runs done, 0:00 elapsed, ETA {clock(expected)}"
    (row,) = read_events(tmp_path)
    assert row["event"] == "progress" and row["what"] == "ae-c" and row["eta_s"] == pytest.approx(expected, abs=0.1)
    # nothing timed yet: no guess
    fresh = {n: _run(tmp_path / "fresh", n, "ae", 0) for n in ("x", "y")}
    assert GridProgress(tmp_path / "fresh", fresh, [Unit(("x",), True, 0.0)]).seconds_left() is None


def test_an_analysis_grid_s_eta_counts_its_noise_sweep_its_parameter_sweeps_and_the_report(tmp_path):
    from dataclasses import replace

    from src.config import PRESETS, DataConfig
    from src.eta import MODEL_COST, REPORT_S, After
    from src.experiments import GridProgress, Unit
    from src.sweeps import analysis_after
    from src.utils import write_json

    # as above: AE epochs of 2 s and 4 s for the rest of a run, which covers 2 conditions x 30 val + test images
    configs = {"ae-a": _run(tmp_path, "ae-a", "ae", 0, 2.0, 10.0), "ae-b": _run(tmp_path, "ae-b", "ae", 1, 2.0, 10.0),
               "ae-c": _run(tmp_path, "ae-c", "ae", 2)}
    write_json(tmp_path / "ae-b" / "noise_sweep.json", {})  # ae-b's noise sweep is done already
    units = [Unit(("ae-c",), True, 0.0)]
    # sweep runs built from the preset, before the data is read: no image count; they train on the grid's 100
    unresolved = replace(configs["ae-c"], data=DataConfig(image_size=32))
    sweeps = (("sweeps/ae-x", unresolved), ("sweeps/vae-y", replace(unresolved, model=replace(unresolved.model, name="vae"))),
              ("sweeps/ae-z", unresolved))
    _run(tmp_path / "sweeps", "ae-x", "ae", 0, 2.0)  # 3 epochs trained, not evaluated: its 4 s are left
    _run(tmp_path / "sweeps", "ae-z", "ae", 0, 2.0, 10.0)  # finished: nothing left
    after = After(report=True, noise_sweep=True, sweeps=sweeps)
    grid = 3 * 2 + 4  # ae-c: 3 epochs and the rest
    noise = 2 * 4  # ae-a and ae-c: before any noise sweep is timed, each as long as the rest of its run
    swept = 4 + (3 * 2 + 4) * MODEL_COST["vae"]  # ae-x's evaluation; vae-y at the AE's borrowed rate x cost
    assert GridProgress(tmp_path, configs, units, after).seconds_left() == pytest.approx(grid + noise + swept + REPORT_S)
    # the sweeps' own ETA, before any sweep run is timed: calibrated on the grid's runs given as timed
    fresh = {"ae-q": _run(tmp_path / "fresh" / "sweeps", "ae-q", "ae", 0)}
    timed = tuple((tmp_path / n, c) for n, c in configs.items())
    assert GridProgress(tmp_path / "fresh" / "sweeps", fresh, [Unit(("ae-q",), True, 0.0)],
                        After(timed=timed)).seconds_left() == pytest.approx(10 + REPORT_S)
    assert GridProgress(tmp_path / "fresh" / "sweeps", fresh, [Unit(("ae-q",), True, 0.0)], After()).seconds_left() is None
    # once a noise sweep is timed (its noise_sweep.json records seconds), the others go at its rate per test
    # image-pixel: ae-a's 3 s over 20 test images stands for ae-c's too
    write_json(tmp_path / "ae-a" / "noise_sweep.json", {"seconds": 3.0})
    assert GridProgress(tmp_path, configs, units, after).seconds_left() == pytest.approx(grid + 3 + swept + REPORT_S)
    # the analysis preset: its noise sweep and 21 sweep runs: 7 sweeps of 4 values with 1 seed, each holding one
    # grid cell (lambda 1e-5, latent 200, beta 1, 4 channels) that is reused, not trained again
    a = analysis_after(PRESETS["analysis"])
    assert a.noise_sweep and a.rd is None and a.report
    assert len(a.sweeps) == 21 == len({rel for rel, _ in a.sweeps}) and all(r.startswith("sweeps/") for r, _ in a.sweeps)


def test_eta_error_at_a_quarter_half_and_three_quarters(tmp_path, capsys):
    from benchmarks.eta_error import errors, main
    from src.eta import read_events

    lines = [("start", 500, None), ("progress", 510, 10.0), ("end", 520, 0.0),  # an earlier launch: ignored
             ("start", 1000, None), ("progress", 1010, 100.0), ("progress", 1050, 60.0), ("progress", 1080, 10.0),
             ("end", 1100, 0.0), ("progress", 1200, 5.0)]  # a later `rd` alone: after the end, ignored
    (tmp_path / "progress.log").write_text("".join(
        json.dumps({"event": e, "t": t, "eta_s": s, "what": f"line {t}"}) + "\n" for e, t, s in lines))
    events = read_events(tmp_path)
    assert [e["t"] for e in events] == [1000, 1010, 1050, 1080, 1100]
    rows = errors(events)
    # at 25 s: the line of 1010 said 100 s, 90 were left; at 50 and 75 s: the line of 1050 said 60, 50 were left
    assert [(r["what"], r["eta_s"], r["left_s"], r["error_s"]) for r in rows] == [
        ("line 1010", 100.0, 90, 10.0), ("line 1050", 60.0, 50, 10.0), ("line 1050", 60.0, 50, 10.0)]
    assert rows[0]["error"] == pytest.approx(10 / 90) and rows[1]["error"] == pytest.approx(0.2)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 50% | 0:50 | line 1050 | 1:00 | 0:50 | +10 s (+20%) |" in out
    (tmp_path / "progress.log").write_text(json.dumps({"event": "start", "t": 1, "eta_s": None, "what": ""}) + "\n")
    assert main([str(tmp_path)]) == 2  # not ended
