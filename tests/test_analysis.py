"""The analysis: seed aggregation (results), the paired test and its correction (stats), the claim
checker on hand-made result files (claims), the README blocks (report.readme), and the sweep
runners on a tiny real grid (sweeps; finished work is skipped)."""
import json

import numpy as np
import pytest

from src import claims as CL
from src import stats as S
from src import sweeps as SW
from src.report import readme as RM
from src.report import tables as T
from src.config import PRESETS
from src.config import preset as make_preset
from src.results import aggregate
from src.utils import save_npz, write_json

# ---------------------------------------------------------------- seeds and statistics


def test_seed_aggregation_is_mean_and_sample_std_over_seeds():
    rng = np.random.default_rng(1)
    runs, values = [], {}
    for model in ("ae", "vae"):
        for seed in range(3):
            v = float(rng.normal(25, 1))
            values.setdefault(model, []).append(v)
            runs.append({"model": model, "reg": "l2", "noise_train": 0.0, "seed": seed, "run": f"{model}-s{seed}",
                         "test": {"clean": {"psnr": v}}})
    agg = aggregate(runs, "test", "clean", "psnr")
    for model, v in values.items():
        expected = (np.mean(v), np.std(v, ddof=1), 3)
        assert agg[(model, "l2", 0.0)] == pytest.approx(expected)
        assert S.mean_std(v) == pytest.approx(expected)
    assert S.mean_std([2.5]) == (2.5, 0.0, 1)
    # tables: "mean ± std" with several seeds, the bare mean with one, a dash for none
    assert T.fmt("psnr", (25.0, 0.5, 3)) == "25.00 ± 0.50"
    assert T.fmt("ssim", (0.5, 0.0, 1)) == "0.5000"
    assert T.fmt("mse", None) == "—"


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 -> x4, x3, x2, x1 = 0.04, 0.09, 0.08 (raised to 0.09: monotone), 0.2
    assert S.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert S.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_wilcoxon_p_values():
    d = np.linspace(0.1, 1.0, 30)
    assert S.wilcoxon_p(np.zeros(10)) == 1.0
    assert S.wilcoxon_p(d) < 1e-6  # all 30 differences positive
    assert S.wilcoxon_p(d) == pytest.approx(S.wilcoxon_p(-d))
    assert S.wilcoxon_p(np.array([1.0, -1.0] * 20)) > 0.5  # no shift


def test_paired_requires_the_same_sign_in_every_seed():
    base = np.linspace(0, 1, 40)
    a = {0: base + 1.0, 1: base - 0.5}  # seed 0 says a > b, seed 1 says a < b
    b = {0: base, 1: base}
    c = S.decide([S.paired(a, b)])[0]
    assert c["p"] < 1e-6 and not c["seeds_agree"] and not c["significant"] and c["direction"] == 0
    c = S.decide([S.paired({0: base + 1.0, 1: base + 0.5}, b)])[0]
    assert c["seeds_agree"] and c["intervals_apart"] and c["significant"] and c["direction"] == 1
    assert c["diff"] == pytest.approx(0.75)


def test_paired_requires_non_overlapping_intervals_over_seeds():
    base = np.linspace(0, 1, 40)
    b = {s: base for s in range(3)}
    a = {0: base + 1.0, 1: base + 0.1, 2: base + 0.1}  # same sign everywhere, but 0.4 +- 0.52 vs 0.5 +- 0
    c = S.decide([S.paired(a, b)])[0]
    assert c["seeds_agree"] and not c["intervals_apart"] and not c["significant"]
    a = {0: base + 1.0, 1: base + 0.9, 2: base + 1.1}
    assert S.decide([S.paired(a, b)])[0]["significant"]
    one = S.decide([S.paired({0: base + 0.1}, {0: base})])[0]  # one seed: the per-image test alone
    assert one["intervals_apart"] and one["significant"]


# ---------------------------------------------------------------- the claim checker on hand-made files

MODELS, REGS, SIGMA = ("ae", "vae"), ("none", "l1", "l2", "l1+l2"), 0.1


def effect_holds(model, reg, tr, cond, seed):
    """Every claim of the original study is true, by a wide margin."""
    e = 3.0 if model == "ae" else 0.0  # AE better quality
    if cond == "clean" and reg == "l2":
        e += 0.5  # L2 best on clean inputs
    if cond != "clean":
        e -= 2.0 if model == "ae" else 0.5  # the VAE loses less under noise
        if reg in ("l1", "l1+l2"):
            e += 0.5  # L1 / L1+L2 help under noise
    return e


def effect_fails(model, reg, tr, cond, seed):
    """Every claim is false, by a wide margin."""
    e = 3.0 if model == "vae" else 0.0
    if cond == "clean" and reg == "none":
        e += 0.5
    if cond != "clean":
        e -= 0.5 if model == "ae" else 2.0
        if reg in ("l1", "l1+l2"):
            e -= 0.5
    return e


def effect_seeds_disagree(model, reg, tr, cond, seed):
    """The 'holds' effects in seed 0, reversed (and smaller) in seed 1: no seed-consistent difference."""
    return effect_holds(model, reg, tr, cond, seed) * (1.0 if seed == 0 else -0.6)


def fake_grid(root, effect, seeds=(0, 1), n=60, unconverged=()):
    """summary.json + per_image.npz of a {AE, VAE} x 4 regs x {clean, noise}-trained grid.

    Every run is marked converged, except the run names in ``unconverged``.

    Per-image value = shared base + effect (PSNR in dB; SSIM gets 1/100 of it, unless the effect
    is a (PSNR, SSIM) pair) + small jitter.
    """
    rng = np.random.default_rng(0)
    base = {"psnr": rng.normal(25, 2, n), "ssim": rng.uniform(0.4, 0.8, n)}
    runs = []
    for model in MODELS:
        for reg in REGS:
            for tr in (0.0, SIGMA):
                for seed in seeds:
                    name = f"{model}-{reg}-{'clean' if tr == 0 else 'noise0.1'}-s{seed}"
                    arrays, means = {}, {}
                    for cond in ("clean", "gaussian_0.1"):
                        e = effect(model, reg, tr, cond, seed)
                        e_psnr, e_ssim = e if isinstance(e, tuple) else (e, e / 100)
                        psnr = base["psnr"] + e_psnr + rng.normal(0, 0.01, n)
                        ssim = base["ssim"] + e_ssim + rng.normal(0, 1e-4, n)
                        vals = {"psnr": psnr, "ssim": ssim, "mse": 10 ** (-psnr / 10)}
                        arrays.update({f"test/{cond}/{k}": v.astype(np.float32) for k, v in vals.items()})
                        means[cond] = {k: float(v.mean()) for k, v in vals.items()}
                    save_npz(root / name / "per_image.npz", arrays)
                    runs.append({"run": name, "model": model, "reg": reg, "noise_train": tr, "seed": seed,
                                 "best_epoch": 1, "test": means, "val": means,
                                 "convergence": {"converged": name not in unconverged}})
    grid = {"preset": {"name": "fake", "noise_sigma": SIGMA, "seeds": list(seeds), "epochs": 1},
            "source": "sample", "dataset": "hand-made"}
    write_json(root / "summary.json", {"grid": grid, "runs": runs, "baselines": None})
    return root


@pytest.mark.parametrize("effect,n,verdict", [
    (effect_holds, 60, CL.CONFIRMED),
    (effect_fails, 60, CL.REFUTED),
    (effect_seeds_disagree, 60, CL.INCONCLUSIVE),
    (effect_holds, 5, CL.INCONCLUSIVE),  # 5 images: the smallest two-sided Wilcoxon p is 2/32 > 0.05
])
def test_claim_verdicts_on_hand_made_results(tmp_path, effect, n, verdict):
    claims = CL.check_claims(fake_grid(tmp_path, effect, n=n))
    assert {k: c["verdict"] for k, c in claims["claims"].items()} == dict.fromkeys(CL.CLAIMS, verdict)
    stored = json.loads((tmp_path / "claims.json").read_text())
    assert stored["claims"]["l2_clean"]["verdict"] == verdict and "Wilcoxon" in stored["test"]
    cells = stored["claims"]["vae_robust"]["cells"]
    assert len(cells) == 8 and all(len(c["comparisons"]) == 2 for c in cells)  # 4 regs x 2 trainings, PSNR + SSIM


def test_one_refuted_cell_refutes_a_claim_that_holds_elsewhere(tmp_path):
    def effect(model, reg, tr, cond, seed):  # as "holds", but for the VAE L1 beats L2 on clean inputs
        e = effect_holds(model, reg, tr, cond, seed)
        return e + 1.0 if (model, reg, cond) == ("vae", "l1", "clean") else e

    claim = CL.check_claims(fake_grid(tmp_path, effect))["claims"]["l2_clean"]
    assert {c["cell"]: c["verdict"] for c in claim["cells"]} == {"AE": CL.CONFIRMED, "VAE": CL.REFUTED}
    assert claim["verdict"] == CL.REFUTED and "confirmed in 1" in claim["tally"]


def test_metrics_that_disagree_give_inconclusive(tmp_path):
    def effect(model, reg, tr, cond, seed):  # the AE wins on PSNR, the VAE on SSIM
        return (3.0, 0.0) if model == "ae" else (0.0, 0.05)

    claim = CL.check_claims(fake_grid(tmp_path, effect))["claims"]["ae_quality"]
    assert [c["verdict"] for c in claim["cells"]] == [CL.INCONCLUSIVE] * 4 and claim["verdict"] == CL.INCONCLUSIVE
    assert {x["metric"]: x["direction"] for x in claim["cells"][0]["comparisons"]} == {"psnr": 1, "ssim": -1}


def test_claim_numbers_are_the_per_image_means(tmp_path):
    root = fake_grid(tmp_path, effect_holds, seeds=(0, 1, 2))
    claim = CL.check_claims(root)["claims"]["ae_quality"]
    comp = next(c for c in claim["cells"][0]["comparisons"] if c["metric"] == "psnr")  # Baseline: AE vs VAE
    per_seed = [np.load(root / f"ae-none-clean-s{s}" / "per_image.npz")["test/clean/psnr"].astype(float).mean()
                for s in range(3)]
    assert comp["mean_a"] == pytest.approx([np.mean(per_seed), np.std(per_seed, ddof=1), 3], rel=1e-5)
    assert comp["diff"] == pytest.approx(3.0, abs=0.01) and comp["seeds"] == [0, 1, 2]


def test_conclusions_markdown_states_verdicts_numbers_and_the_backing_file(tmp_path):
    claims = CL.check_claims(fake_grid(tmp_path, effect_fails))
    text = RM.conclusions_markdown(claims, "hand-made, preset fake")
    for c in CL.CLAIMS.values():
        assert f"**\"{c[0]}\": refuted**" in text
    assert f"`{tmp_path.as_posix()}/claims.json` → `claims.vae_robust`" in text
    assert "Wilcoxon" in text and "Holm" in text and "| AE | L2 vs Baseline | clean | PSNR |" in text
    assert "One seed" not in text  # two seeds
    one = CL.check_claims(fake_grid(tmp_path / "one", effect_fails, seeds=(0,)))
    assert "One seed" in RM.conclusions_markdown(one, "hand-made")


def test_claims_refuse_verdicts_from_unconverged_runs(tmp_path):
    claims = CL.check_claims(fake_grid(tmp_path, effect_holds, unconverged=("vae-l2-clean-s1",)))
    assert claims["converged"] == {"n": 31, "of": 32}  # 2 models x 4 regs x 2 trainings x 2 seeds
    # the one unconverged run is used by "L2 optimal for clean" (VAE L2) and "AE better" (VAE L2 vs AE L2)...
    for key in ("l2_clean", "ae_quality", "vae_robust"):
        c = claims["claims"][key]
        assert c["verdict"] == CL.INCONCLUSIVE and c["tally"].startswith("runs not converged: 1 of the")
        assert c["unconverged_runs"] == ["vae-l2-clean-s1"] and {x["verdict"] for x in c["cells"]} == {CL.INCONCLUSIVE}
    # ...but not by "L1 helps under noise" (none vs L1, L1+L2), which keeps the verdict the data support
    assert claims["claims"]["l1_noise"]["verdict"] == CL.CONFIRMED
    text = RM.conclusions_markdown(claims, "hand-made")
    assert "inconclusive** (runs not converged: 1 of the" in text


def test_rows_that_are_not_significant_name_the_criterion_that_failed(tmp_path):
    claims = CL.check_claims(fake_grid(tmp_path, effect_seeds_disagree))
    rows = [x for c in claims["claims"]["ae_quality"]["cells"] for x in c["comparisons"]]
    assert rows and all(not x["significant"] and "seeds disagree in sign" in x["why_not"] for x in rows)
    assert "| no: " in RM.conclusions_markdown(claims, "hand-made") and "seeds disagree in sign" in \
        RM.conclusions_markdown(claims, "hand-made")


def test_tables_mark_cells_with_an_unconverged_run_and_count_them(tmp_path):
    from src.report.tables import convergence_note, main_table, noise_table

    root = fake_grid(tmp_path, effect_holds, unconverged=("ae-l1-clean-s0", "vae-none-noise0.1-s1"))
    summary = json.loads((root / "summary.json").read_text())
    ae = main_table(summary, "ae").splitlines()
    assert [r.split(" | ")[0] for r in ae[2:]] == ["| Baseline", "| L1 †", "| L2", "| L1+L2"]
    noisy = {tuple(r.split(" | ")[:2]) for r in noise_table(summary, SIGMA).splitlines()[2:]}
    assert ("| VAE", "Baseline †") in noisy and ("| AE", "L1 †") in noisy and ("| AE", "Baseline") in noisy
    assert convergence_note(summary["runs"]).startswith("**30 of 32 runs converged**")
    assert convergence_note(summary["runs"][:1]) == "**The run converged**."  # the first run; no criterion stored
    rows = [{**r, "convergence": {"converged": True, "threshold": 0.01, "tail_epochs": 20, "epochs": 200}}
            for r in summary["runs"][:2]]
    assert convergence_note(rows) == ("**All 2 runs converged** (converged: the best validation loss improved by "
                                      "less than 1% over the last 20 of 200 epochs).")


def test_sweep_table_marks_values_with_an_unconverged_run_and_counts_them():
    def row(value, seed, converged):
        clean = {"psnr": 20.0 + value, "ssim": 0.5, "mse": 0.01}
        return {"sweep": "latent", "model": "vae", "value": value, "seed": seed, "penalty_share": 0.0,
                "metrics": {"val": {"clean": clean}, "test": {"clean": clean}, "convergence": {"converged": converged}}}

    rows = [row(16, 0, True), row(16, 1, True), row(64, 0, True), row(64, 1, False)]
    table = T.sweeps_markdown(rows).splitlines()
    assert table[0].startswith("| Sweep | Model | Value | seeds (converged) |")
    assert [r.split(" | ")[2:4] for r in table[2:]] == [["16", "2 (2)"], ["64 †", "2 (1)"]]
    assert T.convergence_note([r["metrics"] for r in rows]).startswith("**3 of 4 runs converged**")

def _comp(model, reg, level, metric, direction):
    return {"model": model, "reg": reg, "level": level, "metric": metric, "direction": direction,
            "diff": 0.5 * direction, "significant": direction != 0}


@pytest.mark.parametrize("directions,expected", [
    ({}, "- **AE, PSNR**: no significant difference between noise- and clean-trained models at any tested σ "
         "(2 regularizers)."),
    ({("none", 0.1): 1}, "- **AE, PSNR**: denoising training gives significant gains at σ=0.1 (1 of 2 regularizers)."),
    ({("none", 0.1): 1, ("l1", 0.1): 1, ("l1", 0.2): -1},
     "- **AE, PSNR**: denoising training gives significant gains at σ=0.1 (2 of 2 regularizers); "
     "significant losses at σ=0.2 (1 of 2 regularizers)."),
    ({("none", 0.0): -1, ("none", 0.1): -1, ("none", 0.2): -1},
     "- **AE, PSNR**: denoising training gives significant losses at σ=0 (1 of 2 regularizers), "
     "σ=0.1 (1 of 2 regularizers) and σ=0.2 (1 of 2 regularizers)."),
])
def test_denoising_sentence_reads_right_for_none_one_or_many(directions, expected):
    from src.report.tables import denoising_sentence

    comps = [_comp("ae", reg, lv, "psnr", directions.get((reg, lv), 0)) for reg in ("none", "l1") for lv in (0.0, 0.1, 0.2)]
    assert denoising_sentence("AE, PSNR", comps) == expected


def test_one_regularizer_is_singular_everywhere():
    from src.report.tables import denoising_sentence, sampled_z_sentence

    one = [_comp("vae", "none", 0.1, "psnr", 0)]
    assert denoising_sentence("VAE, PSNR", one).endswith("at any tested σ (1 regularizer).")
    assert sampled_z_sentence({"psnr": [0, 0], "ssim": [1, 0]}, 1) == (
        "Decoding μ vs a sampled z, PSNR: no significant difference for any of the 1 regularizer; "
        "SSIM: decoding μ is significantly better for 1 and worse for 0 of the 1 regularizer.")
    assert "of the 4 regularizers" in sampled_z_sentence({"psnr": [0, 4]}, 4)


def test_replace_block_keeps_the_rest_of_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\n<!-- conclusions:start -->\nold\n<!-- conclusions:end -->\n\n## After\n")
    RM.replace_block(readme, RM.CONCLUSION_MARKERS, "new text", "## Conclusions")
    assert readme.read_text() == "# T\n\n<!-- conclusions:start -->\nnew text\n<!-- conclusions:end -->\n\n## After\n"
    RM.replace_block(readme, RM.ANALYSIS_MARKERS, "analysis", "## Parameter analysis")  # absent: appended
    assert readme.read_text().endswith("## Parameter analysis\n\n<!-- analysis:start -->\nanalysis\n<!-- analysis:end -->\n")


def test_noise_sweep_conditions_put_the_grid_sigma_at_the_grid_index():
    names = [c for c in SW.sweep_conditions(0.1)]
    assert names[:2] == [("clean", 0.0), ("gaussian", 0.1)]  # index 1, as in evaluate_run
    assert sorted(v for k, v in names if k == "gaussian") == [0.05, 0.1, 0.2, 0.3]
    assert [v for k, v in names if k == "s&p"] == [0.01, 0.05, 0.1]
    assert SW.sweep_conditions(0.2)[1] == ("gaussian", 0.2) and len(SW.sweep_conditions(0.2)) == 8


# ---------------------------------------------------------------- the runners on a tiny real grid


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Three AE cells of a 1-epoch grid on 48 faces at 32x32 (a whole grid would cost 16 runs),
    then the noise sweep and a 3-point sweep plan through ``run_analysis``."""

    import src.experiments as E
    from src.config import DataConfig
    from src.data import load_dataset
    from src.sample import write_sample

    root = tmp_path_factory.mktemp("analysis")
    write_sample(root / "faces", n=60, seed=0, progress=False)
    preset = make_preset("tiny", "tests", epochs=1, batch_size=16, image_size=32, limit=48, sample_size=2000, seeds=(0,))
    plan = SW.SweepPlan(lambdas=(("ae", "l1", (1e-5, 1e-3)),), vae_latent=(), vae_beta=(), ae_latent=(2,))
    quiet = lambda s: None  # noqa: E731
    data = DataConfig(root=str(root / "faces"), image_size=32, limit=48, sample_size=2000)
    faces = load_dataset(data, progress=False, log=quiet)
    grid = E.grid_configs(preset, data, "cpu", False, models=("ae",))
    cells = {k: grid[k] for k in ("ae-none-clean-s0", "ae-none-noise0.1-s0", "ae-l1-clean-s0")}
    E.run_configs(cells, root / "runs", faces.images, [("clean", 0.0), ("gaussian", 0.1)], "cpu", quiet)
    write_json(root / "runs" / "grid.json", {"preset": preset.summary(), "source": "sample", "dataset": "sample"})
    E.write_summary(root / "runs")
    SW.run_analysis(preset, root / "runs", data_root=str(root / "faces"), device="cpu", progress=False, log=quiet,
                   plan=plan)
    return root, preset, plan


def test_noise_sweep_stores_every_condition_and_reuses_the_grid_noise(tiny):
    root, _, _ = tiny
    names = ["clean", "gaussian_0.1", "gaussian_0.05", "gaussian_0.2", "gaussian_0.3", "s&p_0.01", "s&p_0.05", "s&p_0.1"]
    runs = sorted(p.parent for p in (root / "runs").glob("ae-*/metrics.json"))
    assert len(runs) == 3
    for run in runs:
        sweep = json.loads((run / "noise_sweep.json").read_text())
        assert sweep["conditions"] == names
        per = np.load(run / "noise_sweep.npz")
        grid = np.load(run / "per_image.npz")
        # the grid's sigma has condition index 1 in both: the very same noisy test images
        for cond in ("clean", "gaussian_0.1"):
            np.testing.assert_array_equal(per[f"test/{cond}/psnr"], grid[f"test/{cond}/psnr"])
        assert {f"test/{c}/ssim" for c in names} <= set(per.files) and len(per["test/s&p_0.1/mse"]) == 10
        assert sweep["test"]["s&p_0.1"]["mse"] == pytest.approx(float(per["test/s&p_0.1/mse"].mean()), rel=1e-6)


def test_the_noise_sweep_and_the_sweeps_log_their_eta_lines_into_the_study_s_progress_log(tiny):
    from src.eta import REPORT_S, read_events

    root, _, _ = tiny
    events = read_events(root / "runs")
    noise = [e for e in events if e["what"].startswith("noise sweep: ")]
    assert sorted(e["what"] for e in noise) == [f"noise sweep: {n}" for n in
                                                ("ae-l1-clean-s0", "ae-none-clean-s0", "ae-none-noise0.1-s0")]
    # the grid's runs are timed before the noise sweep starts: every line has an estimate, which counts the
    # sweep plan that run_analysis was given (its 2 runs at the AE's rate) and the report
    assert all(e["eta_s"] is not None and e["eta_s"] > REPORT_S for e in noise)
    assert all(isinstance(json.loads((root / "runs" / r / "noise_sweep.json").read_text())["seconds"], float)
               for r in ("ae-l1-clean-s0", "ae-none-clean-s0", "ae-none-noise0.1-s0"))
    swept = {e["what"] for e in events if e["t"] > noise[-1]["t"]}
    assert {"ae-l1_0.001-s0", "ae-channels_2-s0"} <= swept  # the sweeps' lines, after the noise sweep's
    assert not (root / "runs" / "sweeps" / "progress.log").exists()


def test_sweep_points_reuse_grid_runs_and_store_their_parameters(tiny):
    root, _, _ = tiny
    index = json.loads((root / "runs" / "sweeps" / "sweeps.json").read_text())
    points = {(p["sweep"], p["value"]): p["run"] for p in index["points"]}
    assert points == {("l1", 1e-5): "ae-l1-clean-s0", ("l1", 1e-3): "sweeps/ae-l1_0.001-s0",
                      ("channels", 2): "sweeps/ae-channels_2-s0"}
    cfg = json.loads((root / "runs" / "sweeps" / "ae-l1_0.001-s0" / "config.json").read_text())
    assert cfg["reg"]["kind"] == "l1" and cfg["reg"]["l1"] == 1e-3 and cfg["train"]["noise_train"] == 0
    cfg = json.loads((root / "runs" / "sweeps" / "ae-channels_2-s0" / "config.json").read_text())
    assert cfg["model"]["ae_latent"] == 2 and cfg["reg"]["kind"] == "none"
    assert (root / "runs" / "sweeps" / "ae-channels_2-s0" / "metrics.json").exists()


def test_rerunning_the_analysis_redoes_nothing(tiny, monkeypatch):
    import src.experiments as E

    root, preset, plan = tiny

    def boom(*a, **k):
        raise AssertionError("finished work was done again")

    monkeypatch.setattr(E, "fit", boom)
    monkeypatch.setattr(E, "evaluate_run", boom)
    monkeypatch.setattr(SW, "evaluate_noise", boom)
    files = sorted((root / "runs").rglob("*.npz")) + sorted((root / "runs").rglob("best.pt"))
    before = {p: p.stat().st_mtime_ns for p in files}
    SW.run_analysis(preset, root / "runs", data_root=str(root / "faces"), device="cpu", progress=False,
                   log=lambda s: None, plan=plan)
    assert before == {p: p.stat().st_mtime_ns for p in files}


def test_analyze_command_writes_figures_tables_and_verdicts(tiny):
    from src.__main__ import main

    root, _, _ = tiny
    assert main(["analyze", str(root / "runs"), "--figures", str(root / "Figures"), "--device", "cpu"]) == 0
    figs = sorted(p.name for p in (root / "Figures" / "tiny").iterdir())
    assert figs == ["denoising.png", "noise_sweep_gaussian.png", "noise_sweep_saltpepper.png",
                    "sweep_ae_channels.png", "sweep_lambda.png"]
    text = (root / "runs" / "analysis.md").read_text()
    assert "σ=0.3" in text and "s&p p=0.1" in text and "L1 strength λ1" in text
    claims = json.loads((root / "runs" / "claims.json").read_text())["claims"]
    assert claims["ae_quality"]["verdict"] == CL.INCONCLUSIVE and claims["ae_quality"]["cells"] == []  # no VAE run


def test_reproduce_seeds_flag_and_analysis_stage(tmp_path, monkeypatch):
    import src.__main__ as cli
    import src.pipeline as P

    seen = {}
    def run_grid(preset, out, **k):
        seen["grid"], seen["models"] = preset, k["models"]
        return {"runs": []}  # a summary

    monkeypatch.setattr(P, "run_grid", run_grid)
    monkeypatch.setattr(P, "run_analysis", lambda preset, out, **k: seen.setdefault("analysis", preset))
    monkeypatch.setattr(P, "rd", lambda *a, **k: seen.setdefault("rd", True))
    monkeypatch.setattr(P, "report", lambda *a, **k: {"summary": {"runs": []}, "figures": {}})
    assert cli.main(["reproduce", "--preset", "quick", "--seeds", "3", "--out", str(tmp_path)]) == 0
    assert seen.pop("grid").seeds == (0, 1, 2) and "analysis" not in seen and seen.pop("rd")
    seen.clear()
    assert cli.main(["reproduce", "--preset", "analysis", "--out", str(tmp_path)]) == 0
    assert seen["grid"].seeds == (0, 1, 2) and seen["analysis"] is seen["grid"] and "rd" not in seen
    seen.clear()  # the library call: steps left out are not done, and the notebooks' models reach the grid
    r = P.reproduce("quick", tmp_path, models=("ae",), steps=("grid", "report"))
    assert set(seen) == {"grid", "models"} and seen["models"] == ("ae",) and r["runs"] == 0 and r["figures"] == {}
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--seeds", "0"])


# ---------------------------------------------------------------- end to end (slow)


@pytest.mark.slow
def test_reproduce_analysis_end_to_end(tmp_path, monkeypatch):
    from src.__main__ import main
    from src.sample import write_sample

    write_sample(tmp_path / "faces", n=60, seed=0, progress=False)
    monkeypatch.setitem(PRESETS, "analysis", make_preset("analysis", "tiny", epochs=1, batch_size=16, image_size=32,
                                                         limit=48, sample_size=2000, seeds=(0, 1)))
    monkeypatch.setitem(SW.SWEEP_PLANS, "analysis", SW.SweepPlan(
        lambdas=(("vae", "l2", (1e-5, 1.0)),), vae_latent=(8,), vae_beta=(2.0,), ae_latent=(2,)))
    readme = tmp_path / "README.md"
    mine = "# T\n\n<!-- headline:start -->\nR\n<!-- headline:end -->\n"
    readme.write_text(mine)
    assert main(["reproduce", "--preset", "analysis", "--data", str(tmp_path / "faces"), "--out", str(tmp_path / "runs"),
                 "--figures", str(tmp_path / "Figures"), "--readme", str(readme), "--no-progress"]) == 0
    assert readme.read_text() == mine  # the README's headline comes from the results grid, not the analysis
    text = (tmp_path / "docs" / "results.md").read_text()  # the analysis is published in the docs only
    assert "\nold\n" not in text and "Preset `analysis`" in text and "synthetic sample" in text
    assert "runs/claims.json` → `claims.l2_clean`" in text and "± " in text  # two seeds: mean ± std
    for name in ("vae_prior_samples", "vae_interpolation", "vae_mu_vs_sampled", "sweep_vae_latent", "denoising"):
        assert (tmp_path / "Figures" / "analysis" / f"{name}.png").stat().st_size > 10_000, name
    per = np.load(tmp_path / "runs" / "vae-none-clean-s0" / "noise_sweep.npz")
    assert len(per["test/sampled_z/psnr"]) == 10


def test_claims_refuse_verdicts_from_runs_at_the_mean_image(tmp_path):
    root = fake_grid(tmp_path, effect_holds)
    summary = json.loads((root / "summary.json").read_text())
    # the mean image at 10 dB: every run (about 25 dB) is far above it, but the one set to 10.5 dB
    summary["baselines"] = {"test": {"mean image": {"psnr": 10.0, "ssim": 0.0}}}
    row = next(r for r in summary["runs"] if r["run"] == "vae-l2-clean-s1")
    row["test"]["clean"]["psnr"] = 10.5
    write_json(root / "summary.json", summary)
    claims = CL.check_claims(root)
    for key in ("l2_clean", "ae_quality", "vae_robust"):
        c = claims["claims"][key]
        assert c["verdict"] == CL.INCONCLUSIVE and c["tally"].startswith("runs at the mean image: 1 of the"), c["tally"]
        assert c["unfit_runs"] == {"vae-l2-clean-s1": ["at the mean image"]} and c["unconverged_runs"] == []
    assert claims["claims"]["l1_noise"]["verdict"] == CL.CONFIRMED  # it does not use that run
    assert "inconclusive** (runs at the mean image: 1 of the" in RM.conclusions_markdown(claims, "hand-made")
