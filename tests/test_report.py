"""`reproduce` on the smoke preset: the results store, the report, and re-running as a no-op."""
import csv
import json
import re

import numpy as np
import pytest

from src import report
from src.__main__ import main
from src.experiments import PRESETS, grid_configs
from src.data import DataConfig

FIGS = ["AE_reg_images2.png", "AE_loss.png", "AE_noise_reg_images.png", "vae_reg_images_2.png",
        "VAE_train_loss.png", "VAE_val_loss.png", "VAE_noise_reg_images.png",
        "rd_psnr.png", "rd_ssim.png"]  # reproduce runs the (reduced) rate-distortion sweep of src.rd


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from src.synthetic import write_sample

    root = tmp_path_factory.mktemp("smoke")
    write_sample(root / "faces", n=60, seed=0, progress=False)
    readme = root / "README.md"
    readme.write_text("# Title\n\nintro\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\n## After\n")
    code = main(["reproduce", "--preset", "smoke", "--data", str(root / "faces"), "--out", str(root / "runs"),
                 "--figures", str(root / "Figures"), "--readme", str(readme), "--no-progress"])
    assert code == 0
    return root


def test_every_run_has_its_files_and_the_summary_lists_them(grid):
    runs = grid / "runs"
    names = list(grid_configs(PRESETS["smoke"], DataConfig()))
    assert len(names) == 16
    for name in names:
        for f in ("config.json", "history.csv", "metrics.json", "best.pt", "per_image.npz", "split.npz"):
            assert (runs / name / f).exists(), (name, f)
    summary = json.loads((runs / "summary.json").read_text())
    assert sorted(r["run"] for r in summary["runs"]) == sorted(names)
    assert summary["grid"]["preset"]["name"] == "smoke" and summary["grid"]["source"] == "sample"
    with open(runs / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and "test_gaussian_0.1_ssim" in rows[0]


def test_report_writes_every_figure_and_the_tables(grid):
    for name in FIGS:
        assert (grid / "Figures" / name).stat().st_size > 10_000, name
    assert (grid / "runs" / "tables.md").exists()


def test_table_numbers_equal_the_metrics_files(grid):
    tables = (grid / "runs" / "tables.md").read_text()
    for model in ("ae", "vae"):
        m = json.loads((grid / "runs" / f"{model}-l2-clean-s0" / "metrics.json").read_text())
        expected = [f"{m['val']['clean']['mse']:.5f}", f"{m['test']['clean']['mse']:.5f}",
                    f"{m['val']['clean']['psnr']:.2f}", f"{m['test']['clean']['psnr']:.2f}",
                    f"{m['val']['clean']['ssim']:.4f}", f"{m['test']['clean']['ssim']:.4f}"]
        table = report.main_table(json.loads((grid / "runs" / "summary.json").read_text()), model)
        assert f"| L2 | {' | '.join(expected)} |" in table
        assert table in tables
    base = json.loads((grid / "runs" / "baselines.json").read_text())
    assert f"{base['test']['mean image']['psnr']:.2f}" in tables
    # per-image arrays and means agree
    per = np.load(grid / "runs" / "vae-none-noise0.1-s0" / "per_image.npz")
    m = json.loads((grid / "runs" / "vae-none-noise0.1-s0" / "metrics.json").read_text())
    assert float(per["test/gaussian_0.1/ssim"].mean()) == pytest.approx(m["test"]["gaussian_0.1"]["ssim"], rel=1e-6)


def test_readme_section_is_replaced_between_markers_and_labelled(grid):
    text = (grid / "README.md").read_text()
    assert text.startswith("# Title\n\nintro\n") and text.rstrip().endswith("## After")
    section = re.search(r"<!-- results:start -->(.*)<!-- results:end -->", text, re.S).group(1)
    assert "old" not in section.split("\n")
    assert "synthetic sample" in section and "not Flickr-Faces numbers" in section
    assert "Preset `smoke`" in section and "2 epochs" in section
    assert "](Figures/AE_reg_images2.png)" in section


def test_rerunning_a_finished_grid_trains_nothing(grid, monkeypatch):
    import src.experiments as E

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(E, "fit", boom)
    monkeypatch.setattr(E, "evaluate_run", boom)
    before = {p: p.stat().st_mtime_ns for p in (grid / "runs").glob("*/best.pt")}
    code = main(["reproduce", "--preset", "smoke", "--data", str(grid / "faces"), "--out", str(grid / "runs"),
                 "--figures", str(grid / "Figures2"), "--readme", "", "--no-progress"])
    assert code == 0
    assert before == {p: p.stat().st_mtime_ns for p in (grid / "runs").glob("*/best.pt")}
    assert (grid / "Figures2" / "AE_loss.png").exists()


def test_report_command_regenerates_from_stored_results(grid, monkeypatch):
    import src.train as T

    monkeypatch.setattr(T, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    assert main(["report", str(grid / "runs"), "--figures", str(grid / "F3"), "--readme", ""]) == 0
    assert sorted(p.name for p in (grid / "F3").iterdir()) == sorted(FIGS)


def test_report_without_results_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "summary.json" in err and "\n" not in err


def test_reproduce_with_a_missing_data_folder_writes_nothing(tmp_path, capsys):
    code = main(["reproduce", "--preset", "smoke", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "out"),
                 "--readme", "", "--no-progress"])
    assert code == 2 and "nope" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
