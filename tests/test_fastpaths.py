"""Fast paths of the training loop: each one stays within tolerance of the plain path.

bf16 autocast and torch.compile are TrainConfig flags (off by default); channels_last is on
by default for the ConvAE on a CPU; fused Adam is on by default; checkpoints are throttled by ``checkpoint_s``; batches come from the
resident uint8 set in a (seed, epoch) order; a training epoch reads nothing back per step.
"""
import math

import numpy as np
import pytest
import torch

from src import synthetic
from src.config import DataConfig, ModelConfig, RegConfig, RunConfig, TrainConfig
from host_reads import count_host_reads
from src.checkpoint import load_torch, save_torch
from src.evaluation import evaluate
from src.runs import TrainingDiverged
from src.train import epoch_batches, fit, train_one_epoch

SIZE = 32


@pytest.fixture(scope="module")
def faces():
    from PIL import Image

    big = synthetic.generate(60, seed=1)  # (60, 128, 128)
    return np.stack([np.asarray(Image.fromarray(f).resize((SIZE, SIZE), Image.BICUBIC)) for f in big])


def cfg_for(model="ae", epochs=3, reg="l2", **train):
    return RunConfig(model=ModelConfig(name=model, image_size=SIZE, vae_hidden=64, vae_latent=16),
                     reg=RegConfig(kind=reg),
                     train=TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, progress=False, device="cpu", **train),
                     data=DataConfig(image_size=SIZE))


def _train(tmp_path, faces, name, model, **flags):
    res = fit(cfg_for(model, **flags), faces, tmp_path / name, log=lambda *_: None)
    return res, evaluate(res["model"], faces[:20])["clean"]


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_bf16_autocast_changes_results_less_than_a_change_of_seed(tmp_path, faces, model):
    plain, m_plain = _train(tmp_path, faces, "plain", model)
    amp, m_amp = _train(tmp_path, faces, "amp", model, amp=True)
    other, m_other = _train(tmp_path, faces, "seed1", model, seed=1)  # the run-to-run spread of the plain path
    val = lambda r: r["history"][-1]["val_loss"]  # noqa: E731
    assert abs(val(amp) - val(plain)) < abs(val(other) - val(plain))
    # in PSNR, "less than a change of seed" or below 0.01 dB: this small VAE barely leaves its starting point in 3
    # epochs, so two seeds can differ by under 0.001 dB
    spread = max(abs(m_other["psnr"].mean() - m_plain["psnr"].mean()), 0.01)
    assert abs(m_amp["psnr"].mean() - m_plain["psnr"].mean()) < spread
    assert abs(m_amp["ssim"].mean() - m_plain["ssim"].mean()) < 0.01
    # the weights are stored in float32 whatever the autocast
    assert all(v.dtype == torch.float32 for v in amp["best_state"].values())


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_fused_adam_gives_the_per_tensor_results(tmp_path, faces, model):
    fused, m_fused = _train(tmp_path, faces, "fused", model)  # the default
    loop, m_loop = _train(tmp_path, faces, "loop", model, fused_adam=False)
    # the same float32 update, fused into one kernel: equal up to rounding order
    assert fused["history"][-1]["val_loss"] == pytest.approx(loop["history"][-1]["val_loss"], rel=1e-4)
    np.testing.assert_allclose(m_fused["psnr"], m_loop["psnr"], atol=0.01)


def test_channels_last_gives_the_plain_results(tmp_path, faces):
    plain, m_plain = _train(tmp_path, faces, "plain", "ae", noise_train=0.1, channels_last=False)
    cl, m_cl = _train(tmp_path, faces, "cl", "ae", noise_train=0.1, channels_last=True)
    assert cl["model"].encoder[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain["model"].encoder[2].weight.is_contiguous(memory_format=torch.channels_last)
    # only the memory layout changes: equal up to float32 summation order
    assert cl["history"][-1]["val_loss"] == pytest.approx(plain["history"][-1]["val_loss"], rel=1e-5)
    np.testing.assert_allclose(m_cl["ssim"], m_plain["ssim"], atol=1e-5)
    for k, v in plain["best_state"].items():
        torch.testing.assert_close(cl["best_state"][k].contiguous(), v, rtol=1e-4, atol=1e-6)


def test_a_checkpoint_of_one_layout_resumes_in_the_other(tmp_path, faces):
    # torch's fused CPU Adam pairs a weight and its moments by memory position: contiguous moments loaded
    # for a channels_last weight (an older checkpoint, or one from a stack) would update the wrong elements.
    plain = fit(cfg_for("ae", epochs=2, channels_last=False), faces, tmp_path / "plain", log=lambda *_: None)
    for first, then in ((False, True), (True, False)):
        run = tmp_path / f"{first}-{then}"
        fit(cfg_for("ae", epochs=1, channels_last=first), faces, run, log=lambda *_: None)
        res = fit(cfg_for("ae", epochs=2, channels_last=then), faces, run, resume=True, log=lambda *_: None)
        assert res["history"][-1]["val_loss"] == pytest.approx(plain["history"][-1]["val_loss"], rel=1e-5)
        for k, v in plain["best_state"].items():
            torch.testing.assert_close(res["best_state"][k].contiguous(), v, rtol=1e-4, atol=1e-6)


def test_channels_last_is_the_default_for_the_conv_ae_on_a_cpu_only():
    from src.train import uses_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert uses_channels_last(cfg_for("ae"), cpu) and not uses_channels_last(cfg_for("vae"), cpu)
    assert not uses_channels_last(cfg_for("ae"), cuda)  # not measured there: the plain layout
    assert not uses_channels_last(cfg_for("ae", channels_last=False), cpu)  # an explicit setting wins
    assert uses_channels_last(cfg_for("ae", channels_last=True), cuda)


def test_an_optional_flag_is_set_from_the_command_line_as_a_bool():
    from src.config import set_fields

    cfg = cfg_for("ae")
    assert set_fields(cfg, ["train.channels_last=false"]).train.channels_last is False
    assert set_fields(cfg, ["train.channels_last=yes"]).train.channels_last is True
    assert set_fields(cfg, ["train.channels_last=none"]).train.channels_last is None


@pytest.mark.slow  # a cold compile takes about a minute per model
@pytest.mark.parametrize("model", ["ae", "vae"])
def test_torch_compile_gives_the_plain_results(tmp_path, faces, model):
    plain, _ = _train(tmp_path, faces, "plain", model)
    comp, _ = _train(tmp_path, faces, "comp", model, compile=True)
    assert comp["history"][-1]["val_loss"] == pytest.approx(plain["history"][-1]["val_loss"], rel=1e-3)
    assert set(comp["best_state"]) == set(plain["best_state"])  # no "_orig_mod." prefix in checkpoints


def test_epoch_batches_visit_every_image_once_in_a_seeded_order():
    data = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1).expand(50, 2, 2).contiguous()  # image i is all i

    def order(seed, epoch):
        batches = list(epoch_batches(data, 16, seed, epoch))
        assert [b.shape for b in batches] == [(16, 1, 2, 2)] * 3 + [(2, 1, 2, 2)]
        assert all(b.dtype == torch.float32 for b in batches)
        return torch.cat([b[:, 0, 0, 0] for b in batches]).mul(255).round().long().tolist()

    first = order(0, 1)
    assert sorted(first) == list(range(50))
    assert order(0, 1) == first  # a resumed run shuffles as an uninterrupted one
    assert order(0, 2) != first and order(1, 1) != first


def test_a_training_epoch_reads_nothing_back_per_step(faces, monkeypatch):
    # Host syncs (float(t), t.item(), bool(t), t.tolist()) in the project's code must not grow with
    # the number of steps. (torch's Adam reads its step counters, which live on the host by design.)
    cfg = cfg_for("vae", reg="l1+l2")
    calls = count_host_reads(monkeypatch)

    def syncs(n_images):
        from src.models import build_model

        torch.manual_seed(0)
        model = build_model(cfg.model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        calls["n"] = 0
        out = train_one_epoch(model, opt, torch.from_numpy(faces[:n_images]), cfg, epoch=1)
        return calls["n"], out

    few, out = syncs(16)  # 2 steps
    many, _ = syncs(48)  # 6 steps
    assert few == many <= len(out)  # one read per reported quantity, once per epoch
    assert set(out) == {"loss", "recon", "kl", "penalty"}


def test_checkpoints_are_throttled_but_always_written_after_the_last_epoch(tmp_path, faces):
    res = fit(cfg_for("ae", epochs=3, checkpoint_s=1e9), faces, tmp_path / "r", log=lambda *_: None)
    last, best = load_torch(tmp_path / "r" / "last.pt"), load_torch(tmp_path / "r" / "best.pt")
    assert last["epoch"] == 3 and last["best_epoch"] == res["best_epoch"] == best["epoch"]
    assert all(torch.equal(best["model"][k], v) for k, v in res["best_state"].items())


def test_checkpoint_clock_keeps_writes_under_a_twentieth_of_the_time():
    from src.config import TrainConfig
    from src.runs import SAVE_SHARE, CheckpointClock

    t = [0.0]  # a hand-moved clock: the rule, not this machine's speed
    clock = CheckpointClock(TrainConfig(epochs=100, checkpoint_s=60), now=lambda: t[0])
    t[0] = 59.9
    assert not clock.due(1)
    t[0] = 60.0
    assert clock.due(2)
    with clock.saving():
        t[0] += 10.0  # a 10 s write (a big stack): the next one waits 10 / SAVE_SHARE = 200 s, not 60
    assert SAVE_SHARE == 0.05
    t[0] += 199.0
    assert not clock.due(3)
    t[0] += 1.0
    assert clock.due(4)
    assert clock.due(100)  # the last epoch is always written
    assert CheckpointClock(TrainConfig(epochs=100, checkpoint_s=0), now=lambda: t[0]).due(5)  # 0 = every epoch


@pytest.mark.parametrize("every,saved", [(0.0, 2), (1e9, None)])
def test_divergence_names_the_checkpoint_actually_on_disk(tmp_path, faces, monkeypatch, every, saved):
    import src.train as T

    orig = T.train_one_epoch

    def nan_on_third(model, opt, data, cfg, epoch):
        out = orig(model, opt, data, cfg, epoch)
        return {**out, "loss": math.nan} if epoch == 3 else out

    monkeypatch.setattr(T, "train_one_epoch", nan_on_third)
    with pytest.raises(TrainingDiverged, match="epoch 3") as e:
        fit(cfg_for("ae", epochs=4, checkpoint_s=every), faces, tmp_path / "r", log=lambda *_: None)
    if saved is None:  # nothing written yet: the message must not point at a checkpoint
        assert not (tmp_path / "r" / "last.pt").exists() and "checkpoint" not in str(e.value)
    else:
        assert load_torch(tmp_path / "r" / "last.pt")["epoch"] == saved
        assert f"(epoch {saved})" in str(e.value)


def test_a_checkpoint_written_before_the_speed_flags_still_resumes(tmp_path, faces):
    fit(cfg_for("ae", epochs=1), faces, tmp_path / "r", log=lambda *_: None)
    ckpt = load_torch(tmp_path / "r" / "last.pt")
    for key in ("amp", "channels_last", "compile", "checkpoint_s", "fused_adam"):  # as an older version wrote it
        del ckpt["config"]["train"][key]
    save_torch(ckpt, tmp_path / "r" / "last.pt")
    res = fit(cfg_for("ae", epochs=2, channels_last=True), faces, tmp_path / "r", resume=True, log=lambda *_: None)
    assert [r["epoch"] for r in res["history"]] == [1, 2]
    # a setting that changes the objective is still refused
    from src.utils import UserError

    with pytest.raises(UserError, match="different configuration"):
        fit(cfg_for("ae", epochs=3, amp=True), faces, tmp_path / "r", resume=True, log=lambda *_: None)


_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "kept":
    from src.train import pick_device
    pick_device("cpu")  # on the CPU: utils.keep_freed_memory()
for _ in range(5):  # 64 MiB blocks: the heap settles in a few rounds, then ten more are counted
    torch.empty(1 << 24).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(1 << 24).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_on_the_cpu_freed_large_blocks_are_reused_without_page_faults():
    """glibc unmaps a freed block of 32 MiB or more, so each new 64 MiB tensor faults in its 16,384 pages
    again; with the heap kept (``pick_device`` on a CPU) the block is reused and nothing faults."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    faults = {how: int(subprocess.run([sys.executable, "-c", _FAULTS, how], cwd=root, capture_output=True,
                                      text=True, check=True).stdout) for how in ("default", "kept")}
    assert faults["default"] >= 10 * 16_384 * 0.9 or faults["default"] >= 10 * 32  # 4 KiB pages, or 2 MiB ones
    assert faults["kept"] < faults["default"] / 10, faults
