"""The command line, called as `main([...])`: the issue's "done when" paths and the error paths."""
import json

import numpy as np
import pytest
from PIL import Image

from src.__main__ import main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "train", "evaluate", "reproduce", "report"):
        assert cmd in out


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_train_without_data_uses_the_generated_sample_then_evaluate(tmp_path, monkeypatch, capsys, model):
    monkeypatch.chdir(tmp_path)  # no data/flickr here: the sample is generated in ./data/sample
    assert main(["train", "--model", model, "--epochs", "2", "--limit", "300", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "generated sample" in out or "sample" in out
    assert (tmp_path / "data" / "sample" / "SAMPLE.json").exists()
    run = tmp_path / "runs" / f"{model}-none"
    for f in ("history.csv", "best.pt", "last.pt", "config.json"):
        assert (run / f).exists()
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert set(m[split]) == {"clean", "gaussian_0.1"}
        assert {"mse", "psnr", "ssim"} <= set(m[split]["clean"])
    assert m["test"]["clean"]["n"] == 60  # 20% of the 300 images used


def test_train_on_nested_pgm_folder_of_another_size(tmp_path):
    rng = np.random.default_rng(0)
    for person in range(6):
        d = tmp_path / "faces" / f"s{person}"
        d.mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (112, 92), dtype=np.uint8)).save(d / f"{k}.pgm")
    out = tmp_path / "run"
    assert main(["train", "--model", "ae", "--epochs", "1", "--data", str(tmp_path / "faces"), "--image-size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["root"] == str((tmp_path / "faces").resolve()) or cfg["data"]["root"].endswith("faces")
    split = np.load(out / "split.npz")
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 24


def _one_line_error(capsys, argv, *needles):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_bad_arguments_get_one_line_and_exit_code_2(tmp_path, capsys):
    _one_line_error(capsys, ["train", "--epochs", "0"], "epochs")
    _one_line_error(capsys, ["train", "--model", "gan"], "gan")
    _one_line_error(capsys, ["train", "--reg", "l3"], "l3")
    _one_line_error(capsys, ["train", "--noise-train", "-0.1"], "--noise-train")
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "nope")
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["train", "--out", str(tmp_path / "file")], "existing file")
    _one_line_error(capsys, ["evaluate", str(tmp_path)], "not a run folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_download_without_kagglehub_explains_the_manual_steps(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_kagglehub(name, *a, **k):
        if name == "kagglehub":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_kagglehub)
    err = _one_line_error(capsys, ["data", "download", "--out", "unused"], "kagglehub", "data/flickr")
    assert "by hand" in err  # the manual steps, not only the failure


def test_data_sample_command_is_deterministic(tmp_path):
    assert main(["data", "sample", "--n", "5", "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert main(["data", "sample", "--n", "5", "--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    a = sorted((tmp_path / "a").rglob("*.png"))
    b = sorted((tmp_path / "b").rglob("*.png"))
    assert len(a) == 5 and [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
