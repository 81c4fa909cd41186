"""`reproduce` on the smoke preset: the results store, the report, and re-running as a no-op.

The finished grid is conftest's session fixture ``smoke_grid`` (read only); a test that writes
works on ``smoke_copy``.
"""
import ast
import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src import config, noise, results
from src.__main__ import main
from src.config import DataConfig
from src.config import PRESETS
from src.experiments import grid_configs
from src.report import tables

FIGS = ["AE_reg_images2.png", "AE_loss.png", "AE_noise_reg_images.png", "vae_reg_images_2.png",
        "VAE_train_loss.png", "VAE_val_loss.png", "VAE_noise_reg_images.png",
        "rd_psnr.png", "rd_ssim.png",  # reproduce runs the (reduced) rate-distortion sweep of src.rd
        "vae_kl_per_dim.png", "vae_rate_distortion.png",  # report.vae: the VAE's diagnostics
        "reconstructions.png"]  # the README's headline figure
ROOT = Path(__file__).resolve().parents[1]


def test_every_run_has_its_files_and_the_summary_lists_them(smoke_grid):
    runs = smoke_grid / "runs"
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


def test_report_writes_every_figure_and_the_tables(smoke_grid):
    for name in FIGS:
        assert (smoke_grid / "Figures" / name).stat().st_size > 10_000, name
    assert (smoke_grid / "runs" / "REPORT.md").exists()


def test_figure_data_holds_the_shown_images_of_the_stored_split(smoke_grid):
    runs = smoke_grid / "runs"
    summary = results.load_summary(runs)
    index, arrays = results.read_figure_data(runs)
    n = index["n_show"]
    test = results.run_data(runs / "ae-none-clean-s0")["test"]  # the stored split, read back
    np.testing.assert_array_equal(arrays["test"], test[:n])
    assert index["condition"] == "gaussian_0.1" and not np.array_equal(arrays["noisy"], arrays["test"])
    for (model, reg, tr), run in results.runs_by_cell(summary).items():
        assert arrays[f"recon/{run}/noisy"].shape == (n, 32, 32) and arrays[f"recon/{run}/noisy"].dtype == np.uint8
        assert (f"recon/{run}/clean" in arrays) == (tr == 0.0 or run == index["vae_run"])
    assert index["vae_run"] == "vae-none-clean-s0" and arrays["vae/prior"].shape == (2 * n, 32, 32)
    assert arrays["vae/latent"].shape == arrays["vae/pixels"].shape == (n + 2, 32, 32)
    np.testing.assert_array_equal(arrays["vae/pixels"][0], arrays["test"][0])  # t = 0: the first face


def test_table_numbers_equal_the_metrics_files(smoke_grid):
    runs = smoke_grid / "runs"
    text = (runs / "REPORT.md").read_text()
    ref = json.loads((runs / "baselines.json").read_text())["test"]["mean image"]
    for model in ("ae", "vae"):
        m = json.loads((runs / f"{model}-l2-clean-s0" / "metrics.json").read_text())
        expected = [f"{m['val']['clean']['mse']:.5f}", f"{m['test']['clean']['mse']:.5f}",
                    f"{m['val']['clean']['psnr']:.2f}", f"{m['test']['clean']['psnr']:.2f}",
                    f"{m['val']['clean']['ssim']:.4f}", f"{m['test']['clean']['ssim']:.4f}"]
        table = tables.main_table(json.loads((runs / "summary.json").read_text()), model)
        assert not m["convergence"]["converged"]  # 2 smoke epochs: never converged, so the row carries a dagger
        t = m["test"]["clean"]  # 2 smoke epochs: at the mean image by the definition (1 dB, or a lower SSIM)?
        at_mean = t["psnr"] - ref["psnr"] <= 1.0 or t["ssim"] < ref["ssim"]
        assert m["flags"] == ({"at the mean image": m["flags"].get("at the mean image")} if at_mean else {})
        assert f"| L2 †{' (at the mean image)' if at_mean else ''} | {' | '.join(expected)} |" in table
        assert table in text
    base = json.loads((runs / "baselines.json").read_text())
    assert f"{base['test']['mean image']['psnr']:.2f}" in text
    # per-image arrays and means agree
    per = np.load(runs / "vae-none-noise0.1-s0" / "per_image.npz")
    m = json.loads((runs / "vae-none-noise0.1-s0" / "metrics.json").read_text())
    mean = float(per["test/gaussian_0.1/ssim"].mean())
    assert math.isfinite(mean) and mean == pytest.approx(m["test"]["gaussian_0.1"]["ssim"], rel=1e-6)


def test_readme_section_is_replaced_between_markers_and_labelled(smoke_grid):
    text = (smoke_grid / "README.md").read_text()
    assert text.startswith("# Title\n\nintro\n") and text.rstrip().endswith("## After")
    headline = re.search(r"<!-- headline:start -->(.*)<!-- headline:end -->", text, re.S).group(1)
    assert "old" not in headline.split("\n")
    started = json.loads((smoke_grid / "runs" / "summary.json").read_text())["grid"]["started"][:10]
    assert "synthetic sample (generator src.synthetic v2)" in headline and "not Flickr-Faces" in headline
    assert "preset `smoke`" in headline and "2 epochs" in headline and f"trained {started}" in headline
    assert "](Figures/reconstructions.png)" in headline and "](docs/results.md)" in headline
    section = re.search(r"<!-- results:start -->(.*)<!-- results:end -->",
                        (smoke_grid / "docs" / "results.md").read_text(), re.S).group(1)
    assert "synthetic sample" in section and "not Flickr-Faces numbers" in section
    assert "Preset `smoke`" in section and "2 epochs" in section
    assert "](../Figures/AE_reg_images2.png)" in section
    assert re.search(rf"\(grid started {started}; report written \d{{4}}-\d\d-\d\d\)", section)  # when trained


def test_rerunning_a_finished_grid_trains_nothing(smoke_grid, smoke_copy, monkeypatch):
    import src.experiments as E

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(E, "fit", boom)
    monkeypatch.setattr(E, "evaluate_run", boom)
    runs = smoke_copy / "runs"
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/best.pt")}
    figure_data = (runs / "figure_data.npz").stat().st_mtime_ns
    code = main(["reproduce", "--preset", "smoke", "--data", str(smoke_grid / "faces"), "--out", str(runs),
                 "--figures", str(smoke_copy / "Figures2"), "--readme", "", "--no-progress"])
    assert code == 0
    assert before == {p: p.stat().st_mtime_ns for p in runs.glob("*/best.pt")}
    assert (runs / "figure_data.npz").stat().st_mtime_ns == figure_data  # current: not recomputed
    assert (smoke_copy / "Figures2" / "AE_loss.png").exists()


def test_report_redraws_everything_from_a_weight_free_copy(smoke_copy, monkeypatch):
    import src.train as T

    monkeypatch.setattr(T, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    for p in (smoke_copy / "runs").rglob("*.pt"):  # no checkpoint left: the report reads the store only
        p.unlink()
    assert main(["report", str(smoke_copy / "runs"), "--figures", str(smoke_copy / "F3"), "--readme", ""]) == 0
    assert sorted(p.name for p in (smoke_copy / "F3").iterdir()) == sorted(FIGS)


def _src_imports() -> dict[str, set[str]]:
    """{module: src modules it imports anywhere in its file} for every module of src/ (names relative to src)."""
    src = ROOT / "src"
    names = {".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p for p in src.rglob("*.py")}
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: .x, ..x
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                mod = ".".join(base + [node.module] if node.module else base)
                deps |= {d for d in (mod, *(f"{mod}.{a.name}".strip(".") for a in node.names)) if d in names}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for full in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]):
                    if full and full.startswith("src."):
                        deps |= {full.removeprefix("src.")} & set(names)
        graph[name] = deps - {name, "__init__"}
    return graph


def test_src_imports_are_one_way():
    graph, floor = _src_imports(), {}

    def depth(m, path=()):
        assert m not in path, "import cycle: " + " -> ".join(path + (m,))
        if m not in floor:
            floor[m] = 1 + max((depth(d, path + (m,)) for d in graph[m]), default=-1)
        return floor[m]

    for m in graph:
        depth(m)
    computing = {"train", "evaluation", "experiments", "sweeps", "claims", "rd", "figdata", "compression", "models"}
    for m in (m for m in graph if m.startswith("report")):
        assert not graph[m] & computing, (m, graph[m] & computing)  # the report reads the store only
    assert floor["results"] < min(floor[m] for m in ("evaluation", "claims", "sweeps", "rd", "figdata", "report"))


def test_the_report_package_imports_no_torch():
    code = "import sys, src.report; assert 'torch' not in sys.modules, 'src.report imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_store_names_match_the_computing_side():
    assert tuple(results.REG_LABEL) == config.KINDS  # tables and claims iterate REG_LABEL
    for sigma in (0.1, 0.05, 0.3, 1.0):
        assert results.gaussian_condition(sigma) == noise.condition_name("gaussian", sigma)


def test_report_without_results_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "summary.json" in err and "\n" not in err


def test_reproduce_with_a_missing_data_folder_writes_nothing(tmp_path, capsys):
    code = main(["reproduce", "--preset", "smoke", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "out"),
                 "--readme", "", "--no-progress"])
    assert code == 2 and "nope" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_vae_at_the_mean_image_is_labelled_in_its_row_caption_and_figure(smoke_copy, monkeypatch):
    """A constructed quick-preset grid: the VAE runs sit 0.5 dB above the mean image (as the quick preset's do,
    13.5 vs 12.7 dB), the AE runs 10 dB above it with a higher SSIM. The flag is in the VAE rows of both
    tables, the line under its figures, and the figures' titles; it is in no AE row."""
    from src.report import figures, report

    runs_dir = smoke_copy / "runs"
    summary = json.loads((runs_dir / "summary.json").read_text())
    summary["grid"]["preset"]["name"] = "quick"
    ref = summary["baselines"]["test"]["mean image"]
    for r in summary["runs"]:
        up = (0.5, 0.0) if r["model"] == "vae" else (10.0, 0.9 - ref["ssim"])
        for cond in r["test"].values():
            cond["psnr"], cond["ssim"] = ref["psnr"] + up[0], ref["ssim"] + up[1]
    (runs_dir / "summary.json").write_text(json.dumps(summary))
    titles = []
    real = figures._grid
    monkeypatch.setattr(figures, "_grid", lambda rows, path, title: titles.append(title) or real(rows, path, title))
    report(runs_dir)
    md = (runs_dir / "REPORT.md").read_text()
    vae = md[md.index("#### VAE"):md.index("#### Noise")]
    ae = md[md.index("#### AE"):md.index("#### VAE")]
    for reg in ("Baseline", "L1", "L2", "L1+L2"):
        assert re.search(rf"^\| {re.escape(reg)} † \(at the mean image\) \|", vae, re.M), (reg, vae)
        assert re.search(rf"^\| VAE \| {re.escape(reg)} † \(at the mean image\) \|", md, re.M)  # noise table
    assert "at the mean image" not in ae.split("![")[0]  # the AE table
    caption = "*VAE at the mean image (about the same face for every input): every run.*"
    assert caption in vae  # under the VAE reconstructions
    assert f"Rows marked **at the mean image** (VAE: every run)" in md and f"({ref['psnr']:.2f} dB)" in md
    vae_titles = [t for t in titles if t.startswith("VAE:")]
    assert len(vae_titles) == 2 and all(caption[1:-2] in t for t in vae_titles), titles
    assert not any("mean image" in t for t in titles if t.startswith("AE:"))


def test_the_caption_names_the_cells_at_the_mean_image():
    base = {"test": {"mean image": {"psnr": 12.7, "ssim": 0.35}}}
    runs = [{"run": f"vae-{reg}-{tr}", "model": "vae", "reg": reg, "noise_train": tr, "seed": 0,
             "test": {"clean": {"psnr": 13.0 if reg == "l2" else 20.0, "ssim": 0.5}}}
            for reg in ("none", "l2") for tr in (0.0, 0.1)]
    summary = {"runs": runs, "baselines": base}
    assert tables.figure_caption(summary, "vae") == ("VAE at the mean image (about the same face for every input): "
                                                     "L2 and L2 (noise-trained)")
    assert tables.figure_caption(summary, "ae") == ""
    assert tables.row_name("L2", summary, [("vae", "l2", 0.0)]) == "L2 † (at the mean image)"  # no convergence: †
