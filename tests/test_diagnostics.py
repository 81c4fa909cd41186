"""VAE / AE diagnostics (src/diagnostics.py): hand-computed KL, bits, active units, PCA-equivalent size,
and their place in the store (metrics.json, old grids, the weight-free report)."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from src import diagnostics as D
from src.config import ModelConfig
from src.losses import kl_divergence
from src.models import ConvAE, LinearVAE
from src.results import PCA_CURVE_JSON


def test_kl_per_dim_equals_the_closed_form_by_hand():
    mu = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0, math.log(4.0)], [math.log(0.25), 0.0, 0.0]])
    # 0.5 (mu^2 + sigma^2 - log sigma^2 - 1), entry by entry
    expected = torch.tensor([[0.0, 0.5, 0.5 * (4 + 4 - math.log(4) - 1)],
                             [0.5 * (0.25 + 0.25 - math.log(0.25) - 1), 0.0, 0.0]])
    got = D.kl_per_dim(mu, logvar)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(1), kl_divergence(mu, logvar), atol=1e-6)  # the training loss's sum form


def test_bits_are_nats_over_ln2():
    assert D.to_bits(math.log(2.0)) == pytest.approx(1.0)
    assert D.to_bits(1.0) == pytest.approx(1.4426950408889634)
    assert np.allclose(D.to_bits(np.array([0.0, 2 * math.log(2.0)])), [0.0, 2.0])


def _images(n: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, s, s, generator=torch.Generator().manual_seed(seed))


def test_vae_with_half_of_mu_zeroed_has_exactly_that_many_inactive_units():
    cfg = ModelConfig(name="vae", image_size=8, vae_hidden=16, vae_latent=6)
    model = LinearVAE(cfg)
    with torch.no_grad():
        model.fc_mu.weight[:3] = 0.0  # mu_0..2 = their bias: the same for every image, Var = 0
        model.fc_mu.weight[3:] *= 50.0  # mu_3..5 vary strongly with the image
    x = _images(64, 8)
    mu = model.eval().encode(x)[0]
    assert (mu[:, 3:].var(0, unbiased=False) > 0.1).all()  # precondition, measured independently
    d = D.model_diagnostics(model, [x[:40], x[40:]])  # two batches: the moments are combined
    assert d["active_units"] == 3 and d["latent_dim"] == 6
    assert d["mu_variance"][:3] == [0.0, 0.0, 0.0]
    assert d["active_at"]["0.01"] == 3
    # the rate is the mean over images of the summed KL, as the training loss computes it
    with torch.no_grad():
        out = model(x)
    assert d["rate_nats_per_image"] == pytest.approx(float(kl_divergence(out["mu"], out["logvar"]).mean()), rel=1e-5)
    assert d["rate_bits_per_pixel"] == pytest.approx(d["rate_nats_per_image"] / math.log(2) / 64)
    assert d["elbo"] == pytest.approx(-(d["recon"] + d["kl"]))


def test_ae_dead_channel_counts_as_no_active_entries():
    model = ConvAE(ModelConfig(name="ae", image_size=8, ae_hidden=4, ae_latent=3))
    with torch.no_grad():
        model.encoder[2].weight[0] = 0.0
        model.encoder[2].bias[0] = -1.0  # channel 0 = ReLU(-1) = 0 for every image
    x = _images(32, 8)
    d = D.model_diagnostics(model, [x[:20], x[20:]])
    z = model.encode(x).detach()  # (32, 3, 2, 2)
    varies = (z != z[:1]).any(0)  # (3, 2, 2): the entry takes more than one value over the images
    assert d["latent_shape"] == [3, 2, 2] and d["latent_entries"] == 12 and d["latent_positions"] == 4
    assert d["varying_entries"] == int(varies.sum()) <= 8  # channel 0's four entries never vary
    assert d["dead_channels"] == int((~varies.flatten(1).any(1)).sum()) >= 1


def test_pca_equivalent_size_of_pca_k_itself_is_k():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(12, 64))
    imgs = np.clip(128 + (rng.normal(size=(80, 12)) * np.linspace(40, 2, 12)) @ basis, 0, 255)
    imgs = imgs.astype(np.uint8).reshape(80, 8, 8)
    curve = D.pca_curve(imgs[:60], imgs[60:], ks=(0, 1, 2, 4, 6, 8))
    assert curve["k"] == [0, 1, 2, 4, 6, 8] and all(np.diff(curve["psnr"]) > 0)
    for k, p in zip(curve["k"], curve["psnr"]):
        assert D.pca_equivalent_size(curve["k"], curve["psnr"], p)["k"] == k
    # halfway in PSNR between two measured k: halfway in k
    mid = (curve["psnr"][3] + curve["psnr"][4]) / 2
    assert D.pca_equivalent_size(curve["k"], curve["psnr"], mid)["k"] == pytest.approx(5.0)
    assert D.pca_equivalent_size(curve["k"], curve["psnr"], curve["psnr"][-1] + 1) == {
        "k": None, "bound": "above", "target_psnr": curve["psnr"][-1] + 1, "k_max": 8.0}
    assert D.pca_equivalent_size(curve["k"], curve["psnr"], curve["psnr"][0] - 1)["bound"] == "below"


def test_pca_curve_is_cached_per_split(tmp_path, monkeypatch):
    imgs = np.random.default_rng(1).integers(0, 256, size=(30, 8, 8), dtype=np.uint8)
    split = {"train": np.arange(20), "test": np.arange(20, 30)}
    first = D.cached_pca_curve(tmp_path, "k1", imgs, split)
    assert first == D.pca_curve(imgs[:20], imgs[20:])
    monkeypatch.setattr(D, "pca_curve", lambda *a, **k: pytest.fail("recomputed a cached curve"))
    assert D.cached_pca_curve(tmp_path, "k1", imgs, split) == first
    (tmp_path / "sweeps").mkdir()
    assert D.cached_pca_curve(tmp_path / "sweeps", "k1", imgs, split, also=(tmp_path,)) == first  # the grid's
    assert list(json.loads((tmp_path / PCA_CURVE_JSON).read_text())["curves"]) == ["k1"]
    assert not (tmp_path / "sweeps" / PCA_CURVE_JSON).exists()


# ---------------------------------------------------------------- in the store

def _strip(runs):
    """Make ``runs`` look like a grid evaluated before the diagnostics existed."""
    from src.results import metrics_checksum

    for path in runs.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        m.pop("diagnostics", None)
        m.pop("sha256")
        path.write_text(json.dumps({**m, "sha256": metrics_checksum(m)}))
    (runs / PCA_CURVE_JSON).unlink()


def test_every_run_of_the_grid_holds_its_diagnostics(smoke_grid):
    from src.evaluation import load_run
    from src.results import read_metrics, run_data

    runs = smoke_grid / "runs"
    curves = json.loads((runs / PCA_CURVE_JSON).read_text())["curves"]
    assert len(curves) == 1  # one split: PCA fitted once for the whole grid
    for d in sorted(p for p in runs.iterdir() if (p / "metrics.json").exists()):
        diag = read_metrics(d)["diagnostics"]
        assert diag["split"] == "test" and diag["pca_equivalent"]["curve"] in curves
        if read_metrics(d)["model"] == "vae":
            model, _ = load_run(d)
            test = torch.from_numpy(run_data(d)["test"]).float().div(255).unsqueeze(1)
            with torch.no_grad():
                mu, logvar = model.encode(test)
            assert diag["n"] == len(test)  # the stored test split, every image
            assert diag["rate_nats_per_image"] == pytest.approx(float(kl_divergence(mu, logvar).mean()), rel=1e-5)
            assert diag["active_units"] == int((mu.var(0, unbiased=False) > 0.01).sum())
    with open(runs / "summary.csv", newline="") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    vae, ae = rows["vae-none-clean-s0"], rows["ae-none-clean-s0"]
    stored = read_metrics(runs / "vae-none-clean-s0")["diagnostics"]
    assert float(vae["rate_bits_per_image"]) == stored["rate_bits_per_image"]
    assert vae["active_entries"] == "" and ae["rate_bits_per_image"] == "" and int(ae["active_entries"]) >= 0


def test_report_gives_an_old_grid_its_diagnostics_once(smoke_copy, monkeypatch, capsys):
    from src.__main__ import main
    from src.experiments import ensure_diagnostics
    from src.results import load_summary, read_metrics

    runs = smoke_copy / "runs"
    _strip(runs)
    assert main(["report", str(runs)]) == 0
    names = [r["run"] for r in load_summary(runs)["runs"]]
    assert all(read_metrics(runs / n)["diagnostics"]["version"] == D.VERSION for n in names)
    assert all("diagnostics" in r for r in load_summary(runs)["runs"])  # the summary was refreshed
    monkeypatch.setattr("src.evaluation.run_diagnostics", lambda *a: pytest.fail("computed twice"))
    assert ensure_diagnostics(runs) == []


def test_a_weight_free_old_grid_says_in_one_line_that_it_needs_the_weights(smoke_copy, capsys):
    from src.experiments import ensure_diagnostics

    runs = smoke_copy / "runs"
    _strip(runs)
    for p in runs.rglob("*.pt"):
        p.unlink()
    lines = []
    assert ensure_diagnostics(runs, log=lines.append) == []
    assert len(lines) == 1 and "no weights" in lines[0]


def test_report_draws_the_diagnostics_from_a_weight_free_bundle(smoke_copy):
    from PIL import Image

    from src.__main__ import main
    from src.report.style import VAE_FIGURES
    from src.report.vae import PREVIEW

    runs = smoke_copy / "runs"
    for p in runs.rglob("*.pt"):
        p.unlink()
    assert main(["report", str(runs), "--figures", str(smoke_copy / "Figures")]) == 0
    for name in VAE_FIGURES:
        with Image.open(smoke_copy / "Figures" / name) as im:
            assert im.text["Title"].startswith(PREVIEW)  # the smoke grid's 2-epoch runs never converge
    text = (runs / "REPORT.md").read_text()
    assert "#### The VAE diagnosed" in text and "**Preview (" in text and "no conclusion is drawn" in text
    assert all(f"/{n})" in text for n in VAE_FIGURES)


def _row(run, reg, tr, psnr, rate_bits, au, converged=True, k=3.0):
    """A summary row (what metrics.json holds) of a VAE with 4 latent dimensions on 16-pixel images."""
    kl = [rate_bits * w for w in (0.5, 0.3, 0.2, 0.0)]
    return {"run": run, "model": "vae", "reg": reg, "noise_train": tr, "seed": 0, "test": {"clean": {"psnr": psnr}},
            "convergence": {"converged": converged},
            "diagnostics": {"split": "test", "version": D.VERSION, "latent_dim": 4, "pixels": 16,
                            "kl_per_dim_bits": kl, "kl_per_dim_nats": [b * math.log(2) for b in kl],
                            "mu_variance": [1.0] * au + [0.0] * (4 - au), "rate_bits_per_image": rate_bits,
                            "rate_bits_per_pixel": rate_bits / 16, "active_units": au, "active_threshold": 0.01,
                            "recon": 100.0, "recon_kind": "bce", "elbo": -110.0, "kl": 10.0, "beta": 1.0,
                            "pca_equivalent": {"k": k, "bound": None, "target_psnr": psnr, "k_max": 8.0,
                                               "curve": "c"}}}


def test_the_beta_sweep_and_a_converged_grid_in_the_plane_and_the_paragraph(tmp_path):
    from PIL import Image

    from src.report.vae import PREVIEW, paragraph, plane_figure, vae_table

    summary = {"grid": {"preset": {"name": "full", "noise_sigma": 0.1}}, "baselines": {"test": {"mean image": {"psnr": 10.0}}},
               "runs": [_row("vae-none-clean-s0", "none", 0.0, 20.0, 12.0, 3),
                        _row("vae-l1-clean-s0", "l1", 0.0, 19.0, 8.0, 2)]}
    sweeps = [{"sweep": "beta", "model": "vae", "value": b, "seed": 0, "run": f"sweeps/b{b}",
               "metrics": _row(f"b{b}", "none", 0.0, p, r, au)}
              for b, p, r, au in ((0.5, 22.0, 40.0, 4), (1.0, 20.0, 12.0, 3), (4.0, 15.0, 2.0, 1))]
    text = paragraph(summary, None, sweeps)
    assert "spends 12 bits per image" in text and "(0.75 bits per pixel)" in text  # 12 / 16 pixels
    assert "keeps 3 of its 4 latent dimensions active" in text and "PCA with about 3 component(s)" in text
    assert "Its active dimensions carry 4 bits each on average." in text  # 12 bits / 3
    assert "β = 0.5, 1, 4" in text and "40 → 12 → 2 bits per image" in text
    assert "22.00 → 20.00 → 15.00 dB" in text
    assert "Preview" not in text and "So 1 of the 4 dimensions carries almost no information" in text
    row = "| Baseline | clean | 12.0 | 0.7500 | 3 of 4 | 100.0 (BCE) | -110.0 | 20.00 | 3.0 |"
    assert row in vae_table(summary["runs"], 0.1)
    path = plane_figure(tmp_path, summary, sweeps, tmp_path / "plane.png")
    with Image.open(path) as im:
        assert not im.text["Title"].startswith(PREVIEW)
    sweeps[0]["metrics"]["convergence"]["converged"] = False  # one unconverged β point: a preview, no conclusion
    assert paragraph(summary, None, sweeps).startswith("**Preview (1 of 5 VAE runs not converged).**")
    with Image.open(plane_figure(tmp_path, summary, sweeps, tmp_path / "plane.png")) as im:
        assert im.text["Title"].startswith(PREVIEW)
