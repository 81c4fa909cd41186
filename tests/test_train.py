"""The training loop: loss goes down, best weights are a real copy, resume == uninterrupted."""
import json
import math

import numpy as np
import pytest
import torch

from src import synthetic
from src.config import DataConfig, ModelConfig, RegConfig, RunConfig, TrainConfig
from src.checkpoint import load_torch
from src.evaluation import evaluate, evaluate_run, load_run
from src.results import read_history
from src.runs import TrainingDiverged
from src.train import fit, train_one_epoch

SIZE = 32


@pytest.fixture(scope="module")
def faces():
    from PIL import Image

    big = synthetic.generate(60, seed=1)  # (60, 128, 128)
    return np.stack([np.asarray(Image.fromarray(f).resize((SIZE, SIZE), Image.BICUBIC)) for f in big])


def cfg_for(model="ae", epochs=3, **train):
    return RunConfig(model=ModelConfig(name=model, image_size=SIZE, vae_hidden=64, vae_latent=16),
                     reg=RegConfig(kind=train.pop("reg", "none")),
                     train=TrainConfig(epochs=epochs, batch_size=8, progress=False, device="cpu", **train),
                     data=DataConfig(image_size=SIZE))


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_a_few_epochs_lower_the_loss_and_write_the_run(tmp_path, faces, model):
    res = fit(cfg_for(model, epochs=4, lr=3e-3), faces, tmp_path / "run", log=lambda *_: None)
    h = res["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    for name in ("config.json", "history.csv", "best.pt", "last.pt", "split.npz"):
        assert (tmp_path / "run" / name).exists()
    assert [r["epoch"] for r in read_history(tmp_path / "run")] == [1, 2, 3, 4]
    split = np.load(tmp_path / "run" / "split.npz")
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (42, 6, 12)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert RunConfig.from_dict(cfg) == cfg_for(model, epochs=4, lr=3e-3)


def test_best_weights_are_a_copy_not_the_last_epoch(tmp_path, faces, monkeypatch):
    # Make validation get worse after epoch 2: best must stay at epoch 2 and differ from the final weights.
    import src.train as T

    real = T.validation_loss
    calls = {"n": 0}

    def worse_after_two(model, data, cfg):
        calls["n"] += 1
        out = real(model, data, cfg)
        out["loss"] = float(calls["n"]) if calls["n"] > 2 else -float(calls["n"])
        return out

    monkeypatch.setattr(T, "validation_loss", worse_after_two)
    res = fit(cfg_for("ae", epochs=4), faces, tmp_path / "r", log=lambda *_: None)
    assert res["best_epoch"] == 2
    best = load_torch(tmp_path / "r" / "best.pt")
    assert best["epoch"] == 2
    last = res["model"].state_dict()
    assert any(not torch.equal(best["model"][k], last[k]) for k in last)
    assert all(torch.equal(best["model"][k], res["best_state"][k]) for k in last)


@pytest.mark.parametrize("model,reg,noise", [("ae", "l1+l2", 0.1), ("vae", "l2", 0.0)])
def test_resume_equals_uninterrupted(tmp_path, faces, model, reg, noise):
    full = fit(cfg_for(model, epochs=4, reg=reg, noise_train=noise), faces, tmp_path / "a", log=lambda *_: None)
    fit(cfg_for(model, epochs=2, reg=reg, noise_train=noise), faces, tmp_path / "b", log=lambda *_: None)
    resumed = fit(cfg_for(model, epochs=4, reg=reg, noise_train=noise), faces, tmp_path / "b", resume=True,
                  log=lambda *_: None)
    a, b = full["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full["history"][-1]["train_loss"] == resumed["history"][-1]["train_loss"]
    assert read_history(tmp_path / "a") == [dict(r, seconds=s["seconds"]) for r, s in
                                            zip(read_history(tmp_path / "b"), read_history(tmp_path / "a"))]


def test_without_a_final_checkpoint_only_best_pt_is_written_after_the_last_epoch(tmp_path, faces, monkeypatch):
    """The grid deletes last.pt once a run is evaluated, so it asks fit not to write it after the last epoch."""
    import src.runs as R
    from src.runs import is_trained

    written = []
    real = R.save_torch
    monkeypatch.setattr(R, "save_torch", lambda obj, path: written.append((obj.get("epoch"), path.name)) or real(obj, path))
    fit(cfg_for("vae", epochs=3, checkpoint_s=0), faces, tmp_path / "r", log=lambda *_: None, final_checkpoint=False)
    lasts = [e for e, name in written if name == "last.pt"]
    assert lasts == [1, 2]  # every epoch (checkpoint_s=0) but the last
    assert not (tmp_path / "r" / "last.pt").exists() and is_trained(tmp_path / "r", 3)
    assert load_torch(tmp_path / "r" / "best.pt")["epoch"] == max(e for e, name in written if name == "best.pt")
    written.clear()
    fit(cfg_for("vae", epochs=3, checkpoint_s=0), faces, tmp_path / "d", log=lambda *_: None)  # the default
    assert [e for e, name in written if name == "last.pt"] == [1, 2, 3]


def test_existing_run_without_resume_is_refused(tmp_path, faces):
    from src.utils import UserError

    fit(cfg_for("ae", epochs=1), faces, tmp_path / "r", log=lambda *_: None)
    with pytest.raises(UserError, match="--resume"):
        fit(cfg_for("ae", epochs=1), faces, tmp_path / "r", log=lambda *_: None)


def test_divergence_stops_naming_the_epoch_and_keeps_last_good_checkpoint(tmp_path, faces):
    fit(cfg_for("vae", epochs=1), faces, tmp_path / "r", log=lambda *_: None)
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match="epoch 1") as e:
        fit(cfg_for("vae", epochs=3, lr=1e6), faces, tmp_path / "d", log=lambda *_: None)
    assert "diverged" in str(e.value)
    # a run that diverges after a good epoch keeps that epoch's checkpoint intact
    import src.train as T

    orig = T.train_one_epoch

    def nan_on_second(model, opt, data, cfg, epoch):
        out = orig(model, opt, data, cfg, epoch)
        return {**out, "loss": math.nan} if epoch == 2 else out

    T.train_one_epoch = nan_on_second
    try:
        with pytest.raises(TrainingDiverged, match="epoch 2.*epoch 1"):
            fit(cfg_for("vae", epochs=3), faces, tmp_path / "r", resume=True, log=lambda *_: None)
    finally:
        T.train_one_epoch = orig
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    assert load_torch(tmp_path / "r" / "last.pt")["epoch"] == 1


def test_training_is_deterministic_on_cpu(tmp_path, faces):
    a = fit(cfg_for("ae", epochs=2, noise_train=0.1), faces, tmp_path / "a", log=lambda *_: None)
    b = fit(cfg_for("ae", epochs=2, noise_train=0.1), faces, tmp_path / "b", log=lambda *_: None)
    assert a["history"][-1]["val_loss"] == b["history"][-1]["val_loss"]


def test_evaluate_run_writes_val_test_clean_noisy(tmp_path, faces):
    fit(cfg_for("vae", epochs=1), faces, tmp_path / "r", log=lambda *_: None)
    m = evaluate_run(tmp_path / "r", faces)
    for split, n in (("val", 6), ("test", 12)):
        assert set(m[split]) == {"clean", "gaussian_0.1"}
        for cond in m[split].values():
            assert cond["n"] == n and 0 < cond["mse"] < 1 and -1 <= cond["ssim"] <= 1
            assert math.isfinite(cond["psnr"]) and cond["psnr"] > 0
    per = np.load(tmp_path / "r" / "per_image.npz")
    assert per["test/clean/psnr"].mean() == pytest.approx(m["test"]["clean"]["psnr"], rel=1e-6)
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk["test"]["clean"]["ssim"] == m["test"]["clean"]["ssim"]
    # the noisy condition scores other inputs (not a copy of clean). Whether noise makes a 1-epoch VAE worse is
    # not given (it outputs nearly the mean face); the identity model below shows noise costs what it should.
    per_clean, per_noisy = per["test/clean/mse"], per["test/gaussian_0.1/mse"]
    assert per_clean.shape == per_noisy.shape and not np.array_equal(per_clean, per_noisy)


def test_evaluation_noise_is_identical_for_every_model(faces):
    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return {"x_hat": x}

    a = evaluate(Identity(), faces[:10], [("gaussian", 0.1)], seed=0)
    b = evaluate(Identity(), faces[:10], [("gaussian", 0.1)], seed=0)
    assert np.array_equal(a["gaussian_0.1"]["mse"], b["gaussian_0.1"]["mse"])
    assert a["gaussian_0.1"]["mse"].mean() == pytest.approx(0.01, rel=0.15)  # identity on sigma-0.1 noise


def test_load_run_rebuilds_model_from_stored_config(tmp_path, faces):
    res = fit(cfg_for("ae", epochs=1), faces, tmp_path / "r", log=lambda *_: None)
    model, cfg = load_run(tmp_path / "r")
    assert cfg.model.image_size == SIZE and not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in res["best_state"].items())


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_training_draws_come_from_the_run_generator_not_the_global_one(faces, model):
    # input noise and the VAE's eps are drawn from a generator seeded by (seed, epoch): the same
    # run draws the same numbers whatever else used torch's global generator before (a stack, say)
    from src.models import build_model

    cfg = cfg_for(model, noise_train=0.1)
    outs = []
    for global_seed in (0, 123):
        torch.manual_seed(1)
        net = build_model(cfg.model)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        torch.manual_seed(global_seed)
        outs.append((train_one_epoch(net, opt, torch.from_numpy(faces), cfg, epoch=1), net.state_dict()))
    (a, wa), (b, wb) = outs
    assert a == b and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fit_steps_through_train_step(tmp_path, faces, monkeypatch):
    import src.train as T

    calls = []
    real = T.train_step
    monkeypatch.setattr(T, "train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    fit(cfg_for("ae", epochs=2), faces, tmp_path / "r", log=lambda *_: None)
    assert len(calls) == 2 * math.ceil(42 / 8)  # 42 training images, batches of 8


def test_is_trained_reads_the_history_not_the_checkpoints(tmp_path, faces, monkeypatch):
    """A VAE checkpoint is ~200 MB: telling a finished run needs its history.csv and that best.pt exists."""
    import zipfile

    from src.runs import is_trained

    run = tmp_path / "r"
    fit(cfg_for("ae", epochs=2), faces, run, log=lambda *_: None)

    def opened(*a, **k):
        raise AssertionError("is_trained opened a checkpoint")

    monkeypatch.setattr(torch, "load", opened)  # every way of reading a .pt file
    monkeypatch.setattr(zipfile, "ZipFile", opened)
    assert is_trained(run, 2) and not is_trained(run, 3)  # 2 epochs done of 2; of 3, one is left
    history = (run / "history.csv").read_text().splitlines()
    (run / "history.csv").write_text("\n".join(history[:-1]) + "\n")  # killed before epoch 2's row
    assert not is_trained(run, 2)
    (run / "history.csv").write_text("\n".join(history) + "\n")
    (run / "best.pt").unlink()
    assert not is_trained(run, 2)
    assert not is_trained(tmp_path / "never-trained", 1)


def test_config_key_is_equal_exactly_when_only_the_ignored_fields_differ():
    from dataclasses import replace

    from src.config import RESUMABLE, config_key

    a = cfg_for("ae", epochs=3)
    faster = replace(a, train=replace(a.train, epochs=9, compile=True, device="cuda"))  # all three RESUMABLE
    other_lr = replace(a, train=replace(a.train, lr=1e-4))
    assert config_key(a, RESUMABLE) == config_key(faster, RESUMABLE) and config_key(a) != config_key(faster)
    assert config_key(a, RESUMABLE) != config_key(other_lr, RESUMABLE)
    assert config_key(a.to_dict()) == config_key(a)  # a dict of sections and the dataclass agree
