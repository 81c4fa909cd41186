"""The stacked trainer: G runs trained as one model give what ``fit`` gives each of them alone.

Equivalence is checked in float64 and in float32. In float64 the two paths agree to about
1e-12. In float32 they differ by rounding (vmap turns a convolution into a grouped one and a
linear layer into a batched product, which sum in another order), and Adam normalizes every
gradient: a weight whose gradient is zero up to rounding takes a step of about lr in a
direction that rounding decides. So for the VAE (a 1024 x 64 input layer here) one weight in
about 10^5 may differ by up to ~lr after a few steps; the float32 check bounds their number.
"""
import math

import numpy as np
import pytest
import torch

import src.stacked as St
import src.train as T
from src import data as D
from src import synthetic
from src.checkpoint import load_torch
from src.config import PRESETS, DataConfig, ModelConfig, RegConfig, RunConfig, TrainConfig
from src.experiments import grid_configs, run_configs
from src.results import read_history, read_metrics
from src.stacked import fit_stacked, slice_optimizer_state, stack_chunks, stack_key, stack_optimizer_states
from src.runs import TrainingDiverged
from src.train import fit
from src.utils import UserError

SIZE = 32
quiet = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def faces():
    from PIL import Image

    big = synthetic.generate(60, seed=1)  # (60, 128, 128)
    return np.stack([np.asarray(Image.fromarray(f).resize((SIZE, SIZE), Image.BICUBIC)) for f in big])


@pytest.fixture
def float64(monkeypatch):
    """The whole training path in float64: models, batches, noise, eps, penalty, Adam."""
    real = D.to_float
    for module in (T, St, D):  # D: data.eval_batches, validation's batches
        monkeypatch.setattr(module, "to_float", lambda b: real(b).double())
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def cfg_for(model="ae", seed=0, reg="none", epochs=2, lam=1e-5, **train):
    return RunConfig(model=ModelConfig(name=model, image_size=SIZE, vae_hidden=64, vae_latent=16),
                     reg=RegConfig(kind=reg, l1=lam, l2=lam),
                     train=TrainConfig(epochs=epochs, batch_size=8, seed=seed, progress=False, device="cpu", **train),
                     data=DataConfig(image_size=SIZE))


def three(model, epochs=2, lam=1e-5, **train):
    """Three runs that differ in everything a stack lets differ: seed, regularizer, noise, beta."""
    return [cfg_for(model, 0, "none", epochs, lam, **train),
            cfg_for(model, 1, "l1", epochs, lam, noise_train=0.1, beta=0.5, **train),
            cfg_for(model, 2, "l1+l2", epochs, lam, **train)]


def diffs(a: dict, b: dict) -> torch.Tensor:
    return torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])


def weights(res):
    return res["model"].state_dict()


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_stacked_equals_one_at_a_time_in_float64(tmp_path, faces, model, float64):
    cfgs = three(model, lam=1e-3)  # strong penalties: a run given another's lambda would show
    alone = [fit(c, faces, tmp_path / f"alone{i}", log=quiet) for i, c in enumerate(cfgs)]
    stacked = fit_stacked(cfgs, faces, [tmp_path / f"st{i}" for i in range(3)], log=quiet)
    for i, (a, s) in enumerate(zip(alone, stacked)):
        assert s["error"] is None and all(v.dtype == torch.float64 for v in weights(s).values())
        assert diffs(weights(a), weights(s)).max() <= 1e-5
        assert s["best_epoch"] == a["best_epoch"]
        for ra, rs in zip(a["history"], s["history"]):
            assert rs.keys() == ra.keys()
            for k in ra:
                if k != "seconds":
                    assert rs[k] == pytest.approx(ra[k], rel=1e-9, abs=1e-12), k
        # the run folders are those of fit: same files, same checkpoint format, Adam moments included
        la, ls = load_torch(tmp_path / f"alone{i}" / "last.pt"), load_torch(tmp_path / f"st{i}" / "last.pt")
        assert ls.keys() == la.keys() and ls["epoch"] == la["epoch"] == 2 and ls["config"] == la["config"]
        oa, os_ = la["optimizer"], ls["optimizer"]
        assert oa["param_groups"] == os_["param_groups"] and oa["state"].keys() == os_["state"].keys()
        for j, st in oa["state"].items():
            assert torch.equal(os_["state"][j]["step"], st["step"])
            assert (os_["state"][j]["exp_avg_sq"] - st["exp_avg_sq"]).abs().max() <= 1e-9
        ba, bs = load_torch(tmp_path / f"alone{i}" / "best.pt"), load_torch(tmp_path / f"st{i}" / "best.pt")
        assert bs["epoch"] == ba["epoch"] and diffs(ba["model"], bs["model"]).max() <= 1e-5
        assert read_history(tmp_path / f"st{i}")[-1]["val_loss"] == pytest.approx(a["history"][-1]["val_loss"])
        assert (tmp_path / f"st{i}" / "split.npz").exists() and (tmp_path / f"st{i}" / "config.json").exists()
    assert len({round(s["history"][-1]["train_penalty"], 9) for s in stacked}) == 3  # each run its own penalty


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_stacked_equals_one_at_a_time_in_float32(tmp_path, faces, model):
    cfgs = three(model)
    alone = [fit(c, faces, tmp_path / f"alone{i}", log=quiet) for i, c in enumerate(cfgs)]
    stacked = fit_stacked(cfgs, faces, [tmp_path / f"st{i}" for i in range(3)], log=quiet)
    for a, s in zip(alone, stacked):
        d = diffs(weights(a), weights(s))
        assert s["best_epoch"] == a["best_epoch"]
        assert s["history"][-1]["val_loss"] == pytest.approx(a["history"][-1]["val_loss"], rel=1e-5)
        # see the module docstring: a rare weight follows its rounding-level gradient's sign
        assert (d > 1e-5).sum() <= 10 and d.mean() < 1e-7 and d.max() <= 3 * cfgs[0].train.lr  # a few Adam steps


def test_adam_on_stacked_parameters_is_separate_adams():
    # Adam's update is elementwise, so one Adam over (G, ...) tensors is G Adams over their slices.
    torch.manual_seed(0)
    stacked = [torch.randn(3, 5, 4, requires_grad=True), torch.randn(3, 7, requires_grad=True)]
    alone = [[p[g].detach().clone().requires_grad_() for p in stacked] for g in range(3)]
    opt = torch.optim.Adam(stacked, lr=1e-2, fused=True)
    opts = [torch.optim.Adam(ps, lr=1e-2, fused=True) for ps in alone]
    for _ in range(5):
        grads = [torch.randn_like(p) * 10 ** torch.randint(-4, 2, p.shape) for p in stacked]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        opt.step()
        for r, (ps, o) in enumerate(zip(alone, opts)):
            for p, g in zip(ps, grads):
                p.grad = g[r].clone()
            o.step()
    for r, ps in enumerate(alone):
        for p, q in zip(ps, stacked):
            torch.testing.assert_close(q[r], p, rtol=1e-6, atol=1e-7)
    # and the per-run state slices (fit's checkpoint format) stack back into the same state
    per_run = [slice_optimizer_state(opt.state_dict(), r) for r in range(3)]
    for r, o in enumerate(opts):
        for j, st in o.state_dict()["state"].items():
            torch.testing.assert_close(per_run[r]["state"][j]["exp_avg"], st["exp_avg"], rtol=1e-6, atol=1e-8)
    again = stack_optimizer_states(opt, per_run)
    for j, st in opt.state_dict()["state"].items():
        assert torch.equal(again["state"][j]["exp_avg_sq"], st["exp_avg_sq"])


def test_a_diverging_run_stops_alone_and_the_others_go_on(tmp_path, faces, monkeypatch, float64):
    cfgs = three("ae", epochs=3, checkpoint_s=0.0)
    real = St.train_stack_epoch

    def poison_run_1(stack, optimizer, data, run_cfgs, epoch, step=None):
        if epoch == 2:
            with torch.no_grad():
                for p in stack.params.values():
                    p[1].fill_(math.nan)  # run 1's weights only
        return real(stack, optimizer, data, run_cfgs, epoch, step)

    monkeypatch.setattr(St, "train_stack_epoch", poison_run_1)
    out = fit_stacked(cfgs, faces, [tmp_path / f"st{i}" for i in range(3)], log=quiet)
    monkeypatch.setattr(St, "train_stack_epoch", real)
    err = out[1]["error"]
    assert isinstance(err, TrainingDiverged) and "epoch 2" in str(err) and "(epoch 1)" in str(err)
    last = load_torch(tmp_path / "st1" / "last.pt")  # the last good checkpoint stays
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values())
    assert [r["epoch"] for r in read_history(tmp_path / "st1")] == [1]
    for i in (0, 2):  # NaN never crossed from run 1 into the others (vmap, summed backward, stacked Adam)
        assert out[i]["error"] is None and load_torch(tmp_path / f"st{i}" / "last.pt")["epoch"] == 3
        alone = fit(cfgs[i], faces, tmp_path / f"alone{i}", log=quiet)
        assert diffs(weights(alone), weights(out[i])).max() <= 1e-5


def test_resume_after_an_interruption_equals_uninterrupted(tmp_path, faces, monkeypatch):
    cfgs = three("vae", epochs=4, checkpoint_s=0.0)
    full = fit_stacked(cfgs, faces, [tmp_path / f"full{i}" for i in range(3)], log=quiet)
    real = St.train_stack_epoch

    def killed_at_3(stack, optimizer, data, run_cfgs, epoch, step=None):
        if epoch == 3:
            raise KeyboardInterrupt  # as a kill: epochs 1-2 are on disk
        return real(stack, optimizer, data, run_cfgs, epoch, step)

    monkeypatch.setattr(St, "train_stack_epoch", killed_at_3)
    dirs = [tmp_path / f"cut{i}" for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        fit_stacked(cfgs, faces, dirs, log=quiet)
    monkeypatch.setattr(St, "train_stack_epoch", real)
    assert load_torch(dirs[0] / "last.pt")["epoch"] == 2
    with pytest.raises(UserError, match="--resume"):
        fit_stacked(cfgs, faces, dirs, resume=False, log=quiet)
    resumed = fit_stacked(cfgs, faces, dirs, log=quiet)
    for i, (f, r) in enumerate(zip(full, resumed)):
        assert all(torch.equal(v, weights(r)[k]) for k, v in weights(f).items())
        assert [dict(row, seconds=0) for row in read_history(tmp_path / f"full{i}")] == \
               [dict(row, seconds=0) for row in read_history(dirs[i])]
        assert r["best_epoch"] == f["best_epoch"]


def test_runs_resumed_at_different_epochs(tmp_path, faces, float64):
    # run 0 stopped after epoch 1 (by fit), runs 1-2 after epoch 2 (stacked): each resumes from its own epoch
    cfgs = three("ae", epochs=3)
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    fit(cfg_for("ae", 0, "none", epochs=1), faces, dirs[0], log=quiet)
    fit_stacked(three("ae", epochs=2)[1:], faces, dirs[1:], log=quiet)
    logged = []
    out = fit_stacked(cfgs, faces, dirs, log=logged.append)
    assert sum("together from epoch" in line for line in logged) == 2  # one stack per starting epoch
    for i, c in enumerate(cfgs):
        alone = fit(c, faces, tmp_path / f"alone{i}", log=quiet)
        assert diffs(weights(alone), weights(out[i])).max() <= 1e-5
        assert [r["epoch"] for r in out[i]["history"]] == [1, 2, 3]
    assert fit_stacked(cfgs, faces, dirs, log=quiet)[0]["history"] == out[0]["history"]  # all done: no training


def test_only_runs_of_one_model_and_data_stack_together():
    a, b = cfg_for("ae", 0, "l1"), cfg_for("ae", 3, "l2", noise_train=0.1, beta=2.0)
    assert stack_key(a) == stack_key(b)
    other = {"vae": cfg_for("vae"), "lr": cfg_for("ae", lr=1e-2), "size": RunConfig(
        model=ModelConfig(name="ae", image_size=16), train=TrainConfig(epochs=2, device="cpu"),
        data=DataConfig(image_size=16))}
    assert all(stack_key(c) != stack_key(a) for c in other.values())
    names = {"a0": a, "v0": other["vae"], "a1": b, "a2": a, "v1": other["vae"]}
    assert stack_chunks(names, 2) == [["a0", "a1"], ["a2"], ["v0", "v1"]]
    assert stack_chunks(names, 0) == [["a0", "a1", "a2"], ["v0", "v1"]]
    with pytest.raises(UserError, match="must share"):
        fit_stacked([a, other["vae"]], np.zeros((10, SIZE, SIZE), np.uint8), ["x", "y"], log=quiet)


def test_smoke_grid_one_at_a_time_and_all_together_give_the_same_psnr(tmp_path):
    from PIL import Image

    preset = PRESETS["smoke"]
    size = preset.image_size
    images = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC))
                       for f in synthetic.generate(preset.limit, seed=1)])
    configs = grid_configs(preset, DataConfig(image_size=size, limit=preset.limit), device="cpu", progress=False)
    assert len(configs) == 16
    conditions = [("clean", 0.0), ("gaussian", preset.noise_sigma)]
    for n in (1, 16):
        run_configs(configs, tmp_path / f"p{n}", images, conditions, "cpu", log=quiet, parallel_runs=n)
    for name in configs:
        one, together = read_metrics(tmp_path / "p1" / name), read_metrics(tmp_path / "p16" / name)
        assert together["best_epoch"] == one["best_epoch"]
        for cond in ("clean", "gaussian_0.1"):
            assert abs(together["test"][cond]["psnr"] - one["test"][cond]["psnr"]) <= 0.01, (name, cond)
