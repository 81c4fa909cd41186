"""The command line, called as `main([...])`: the issue's "done when" paths and the error paths."""
import json
import re

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


def test_train_without_data_uses_the_generated_sample_then_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/flickr here: the sample is generated in ./data/sample, then reused
    for model in ("ae", "vae"):  # 400 faces instead of the default 2,000: the same path, a fifth of the time
        assert main(["train", "--model", model, "--epochs", "2", "--limit", "300", "--sample-size", "400",
                     "--no-progress"]) == 0
        out = capsys.readouterr().out
        made = "generating 400 synthetic faces" in out
        assert made == (model == "ae"), out  # the first run makes the sample, the second finds it
        assert (tmp_path / "data" / "sample" / "SAMPLE.json").exists()
        run = tmp_path / "runs" / f"{model}-none-clean-s0"  # train names its default --out as reproduce does
        for f in ("history.csv", "best.pt", "last.pt", "config.json"):
            assert (run / f).exists()
        assert main(["evaluate", str(run), "--no-progress"]) == 0
        assert not (run / "last.pt").exists() and (run / "best.pt").exists()  # evaluated: last.pt only resumed
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


def test_the_cli_answers_help_and_bad_arguments_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from src.__main__ import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(main(['train', '--epochs', '0']), 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == "2 False", r.stdout  # a one-line error, torch never loaded
    assert "error: --epochs must be >= 1, got 0" in r.stderr


def test_every_config_field_is_a_train_flag_with_its_comment_as_help(capsys):
    from dataclasses import fields

    from src.__main__ import FLAG_NAMES, NOT_FLAGS, field_help
    from src.config import SECTIONS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if (section, f.name) not in NOT_FLAGS:
                assert FLAG_NAMES.get((section, f.name), "--" + f.name.replace("_", "-")) in out, f.name
    assert " ".join(field_help(SECTIONS["train"])["vae_recon"].split()) in out
    assert "--epochs EPOCHS full protocol of the original study (default: 200) --batch-size" in out  # once


def test_train_help_is_grouped_and_has_no_flag_that_only_errs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    groups = {}  # argparse prints "title:" then the group's flags
    for block in out.split("\n\n"):
        title, _, body = block.partition(":\n")
        groups[title.strip()] = set(re.findall(r"^\s+(--[a-z0-9-]+)", body, re.M))
    assert {"--model", "--ae-latent"} <= groups["model"] and {"--reg", "--l1", "--scope"} <= groups["regularization"]
    assert {"--epochs", "--lr", "--noise-train"} <= groups["training"] and {"--data", "--split"} <= groups["data"]
    assert groups["speed"] == {"--device", "--amp", "--channels-last", "--compile", "--checkpoint-s", "--fused-adam"}
    assert "--parallel-runs" not in out
    with pytest.raises(SystemExit) as e:  # it only ever said "use reproduce": now argparse's one line
        main(["train", "--parallel-runs", "2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments: --parallel-runs 2" in err


@pytest.mark.parametrize("argv", [["train"], ["evaluate", "RUN"], ["reproduce"], ["rd", "RUNS"], ["data", "sample"],
                                  ["data", "stats", "DIR"]])
def test_every_command_that_draws_bars_takes_progress_and_no_progress(argv):
    from src.__main__ import build_parser

    def progress(*extra):
        a = build_parser().parse_args([*argv, *extra])
        return getattr(a, "progress", getattr(a, "train.progress", None))

    assert (progress(), progress("--progress"), progress("--no-progress")) == (True, True, False)


def test_figures_means_the_same_folder_in_every_command(capsys):
    helps = {}
    for command in ("reproduce", "report", "analyze"):
        with pytest.raises(SystemExit):
            main([command, *(["X"] if command != "reproduce" else []), "--help"])
        text = " ".join(capsys.readouterr().out.split())
        helps[command] = re.search(r"--figures FIGURES (.*?\))(.*?subfolder)", text).group(2)
    assert len(set(helps.values())) == 1 and "<preset>/" in helps["analyze"], helps


def test_report_writes_into_the_run_folder_unless_published(smoke_copy, monkeypatch):
    monkeypatch.chdir(smoke_copy)
    (smoke_copy / "README.md").write_text("# mine\n\n<!-- headline:start -->\nOLD-RESULTS\n<!-- headline:end -->\n")
    assert main(["report", "runs"]) == 0
    assert "OLD-RESULTS" in (smoke_copy / "README.md").read_text() and not (smoke_copy / "Figures").exists()
    assert not (smoke_copy / "docs").exists()
    assert (smoke_copy / "runs" / "REPORT.md").exists() and (smoke_copy / "runs" / "Figures" / "AE_loss.png").exists()
    assert main(["report", "runs", "--publish"]) == 0
    readme = (smoke_copy / "README.md").read_text()
    assert "OLD-RESULTS" not in readme and "](Figures/reconstructions.png)" in readme
    assert "](../Figures/AE_reg_images2.png)" in (smoke_copy / "docs" / "results.md").read_text()
    assert (smoke_copy / "Figures" / "AE_reg_images2.png").exists()


def test_export_writes_a_weight_free_bundle_that_report_redraws(smoke_copy, tmp_path, capsys):
    import tarfile

    runs = smoke_copy / "runs"
    assert main(["export", str(runs), str(tmp_path / "b.tar.gz")]) == 0
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        names = tar.getnames()
        assert "summary.json" in names and "figure_data.npz" in names and not any(n.endswith(".pt") for n in names)
        assert all(m.size <= 16 * 2**20 for m in tar.getmembers())
        tar.extractall(tmp_path / "bundle", filter="data")
    assert main(["report", str(tmp_path / "bundle")]) == 0  # no weights, no data folder needed
    assert (tmp_path / "bundle" / "Figures" / "AE_reg_images2.png").exists()
    assert main(["export", str(runs), str(tmp_path / "folder")]) == 0
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == sorted({n.split("/")[0] for n in names})
    capsys.readouterr()
    assert main(["export", str(runs), str(tmp_path / "folder")]) == 2  # never writes into a non-empty folder
    assert "not empty" in capsys.readouterr().err


def test_data_stats_prints_a_table_or_json(tmp_path, capsys, monkeypatch):
    from src.sample import write_sample

    monkeypatch.chdir(tmp_path)  # the decode cache goes to ./data/.cache
    write_sample(tmp_path / "faces", n=40, seed=0, progress=False)
    assert main(["data", "stats", str(tmp_path / "faces"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n"] == 40 and set(stats["pca_k"]) == {"10", "50", "200"}
    assert main(["data", "stats", str(tmp_path / "faces")]) == 0
    assert "JPEG" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["data", "stats", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_before_any_data_is_read(tmp_path, capsys):
    """The data folder and run folders given do not exist: an error about them would mean they were read first."""
    nope = str(tmp_path / "nope")
    for argv in (["train", "--device", "cuda", "--data", nope, "--epochs", "1", "--out", str(tmp_path / "r")],
                 ["reproduce", "--device", "cuda", "--data", nope, "--out", str(tmp_path / "o")],
                 ["evaluate", nope, "--device", "cuda"], ["rd", nope, "--device", "cuda"],
                 ["analyze", nope, "--device", "cuda"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: device 'cuda' requested but CUDA is not available; use --device cpu"], (argv, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


def test_last_checkpoint_is_removed_once_evaluated_unless_kept(tmp_path, monkeypatch, capsys):
    from src.config import PRESETS
    from src.experiments import run_grid
    from src.sample import write_sample

    monkeypatch.chdir(tmp_path)
    write_sample(tmp_path / "faces", n=48, seed=0, progress=False)
    small = ["--model", "ae", "--epochs", "1", "--limit", "48", "--image-size", "32", "--batch-size", "16",
             "--data", str(tmp_path / "faces"), "--no-progress", "--device", "cpu"]
    for keep, run in ((True, tmp_path / "kept"), (False, tmp_path / "dropped")):
        assert main(["train", *small, "--out", str(run), *(["--keep-last"] if keep else [])]) == 0
        assert (run / "last.pt").exists()  # trained, not yet evaluated: it may be resumed
        assert main(["evaluate", str(run), "--no-progress", "--device", "cpu"]) == 0
        assert (run / "last.pt").exists() == keep and (run / "best.pt").exists()
    capsys.readouterr()
    # a finished run without its last.pt is not silently trained again from epoch 1
    best = (tmp_path / "dropped" / "best.pt").read_bytes()
    assert main(["train", *small, "--out", str(tmp_path / "dropped"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "finished" in err and "--keep-last" in err, err
    assert (tmp_path / "dropped" / "best.pt").read_bytes() == best
    # rd's extra latent sizes: trained once, then reused from best.pt and history.csv alone
    from src.config import RunConfig
    from src.data import load_dataset
    from src.experiments import train_latent_variant

    base = RunConfig.from_dict(json.loads((tmp_path / "dropped" / "config.json").read_text()))
    images, said = load_dataset(base.data, progress=False, log=lambda *_: None).images, []
    for _ in range(2):
        variant = train_latent_variant(base, 2, images, tmp_path / "variant", log=said.append)
        assert (variant / "best.pt").exists() and not (variant / "last.pt").exists()
    assert sum("rd: training" in s for s in said) == 1, said
    # the grid: no last.pt in a finished run folder by default (reproduce --keep-last: conftest's smoke grid)
    out = tmp_path / "grid"
    run_grid(PRESETS["smoke"], out, data_root=str(tmp_path / "faces"), device="cpu", models=("ae",), progress=False,
             log=lambda *_: None)
    runs = sorted(p for p in out.iterdir() if (p / "metrics.json").exists())
    assert len(runs) == 8 and all((r / "best.pt").exists() and not (r / "last.pt").exists() for r in runs)


def test_reproduce_keep_last_keeps_every_last_checkpoint(smoke_grid):
    runs = [p for p in (smoke_grid / "runs").iterdir() if (p / "metrics.json").exists()]
    assert len(runs) == 16 and all((r / "last.pt").exists() for r in runs)  # conftest passes --keep-last
