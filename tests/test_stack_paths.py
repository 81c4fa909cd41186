"""The stacked trainer's fast paths and their fallbacks, exercised on the CPU: batched validation equals
one run's ``validation_loss``; a CUDA graph that fails to capture falls back to the plain stacked step;
a plain stacked step that fails to start falls back to one run at a time; an epoch reads nothing back
per step. (The CUDA graph itself needs a GPU: docs/gpu.md.)"""

import numpy as np
import pytest
import torch

import src.stacked as St
from src import synthetic
from src.checkpoint import load_torch
from src.experiments import run_configs
from src.models import build_model
from src.results import read_history, read_metrics
from src.stacked import Stack, fit_stacked, train_stack_epoch
from src.train import fit, make_optimizer, validation_loss
from test_stacked import SIZE, cfg_for, three
from host_reads import count_host_reads

quiet = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def faces():
    from PIL import Image

    big = synthetic.generate(40, seed=2)
    return np.stack([np.asarray(Image.fromarray(f).resize((SIZE, SIZE), Image.BICUBIC)) for f in big])


@pytest.mark.parametrize("model", ["ae", "vae"])
def test_batched_validation_equals_each_runs_validation_loss(faces, model):
    cfgs = three(model)  # other seeds, noise levels (the validation noise), beta and regularizers
    models = []
    for c in cfgs:
        torch.manual_seed(c.train.seed)
        models.append(build_model(c.model))
    val = torch.from_numpy(faces[:23])  # not a multiple of anything: a short last chunk
    expected = [validation_loss(m, val, c) for m, c in zip(models, cfgs)]
    got = Stack(models, cfgs).validate(val, cfgs)
    for e, g in zip(expected, got):
        assert g.keys() == e.keys() and {"loss", "recon", "mse"} <= set(g)
        for k in e:
            assert g[k] == pytest.approx(e[k], rel=1e-5), k


def test_a_graph_that_fails_to_capture_falls_back_to_the_plain_step(tmp_path, faces, monkeypatch):
    cfgs = three("ae", epochs=2)
    plain = fit_stacked(cfgs, faces, [tmp_path / f"p{i}" for i in range(3)], log=quiet)
    monkeypatch.setattr(St, "GRAPH_DEVICES", ("cpu",))  # try the graph here: torch.cuda.graph raises without CUDA
    logged = []
    tried = fit_stacked(cfgs, faces, [tmp_path / f"g{i}" for i in range(3)], log=logged.append)
    falls = [line for line in logged if "failed to capture" in line]
    assert len(falls) == 1 and "falling back to the plain stacked step" in falls[0]
    assert any(line.startswith("trainer: plain stacked, 3 ae runs:") for line in logged)
    for p, t in zip(plain, tried):  # the warm-up steps were real steps: nothing lost, nothing repeated
        assert p["history"][-1]["val_loss"] == t["history"][-1]["val_loss"]
        for k, v in p["model"].state_dict().items():
            assert torch.equal(v, t["model"].state_dict()[k]), k
    groups = load_torch(tmp_path / "g0" / "last.pt")["optimizer"]["param_groups"]
    assert all(g["capturable"] is False for g in groups)  # a checkpoint any device can resume


def test_a_stack_that_fails_to_start_trains_one_run_at_a_time(tmp_path, faces, monkeypatch):
    cfgs = dict(zip(("a", "b", "c"), three("vae", epochs=2)))
    real = St.train_step

    def out_of_memory(objective, *a, **k):
        if isinstance(objective, Stack):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(objective, *a, **k)

    monkeypatch.setattr(St, "train_step", out_of_memory)
    logged = []
    run_configs(cfgs, tmp_path / "runs", faces, [("clean", 0.0)], "cpu", logged.append, parallel_runs=0)
    fallback = [line for line in logged if "stacked step failed to start" in line]
    assert fallback == ["trainer: the stacked step failed to start (RuntimeError: CUDA out of memory. Tried to "
                        "allocate 2.00 GiB); training 3 runs one at a time"]
    assert sum(line.startswith("trainer: one run at a time, 1 vae run:") for line in logged) == 3
    for name, c in cfgs.items():  # each run as fit alone trains it
        assert read_metrics(tmp_path / "runs" / name) is not None
        alone = fit(c, faces, tmp_path / f"alone-{name}", log=quiet)
        got = read_history(tmp_path / "runs" / name)
        assert [h["val_loss"] for h in got] == pytest.approx([h["val_loss"] for h in alone["history"]], rel=1e-6)


def test_a_stacked_epoch_reads_nothing_back_per_step(faces, monkeypatch):
    cfgs = three("vae", epochs=1)
    calls = count_host_reads(monkeypatch)

    def syncs(n_images):
        models = []
        for c in cfgs:
            torch.manual_seed(c.train.seed)
            models.append(build_model(c.model))
        stack = Stack(models, cfgs)
        opt = make_optimizer(stack.params.values(), cfgs[0].train, torch.device("cpu"))
        step = St.StackStep(stack, opt, torch.device("cpu"), quiet)
        calls["n"] = 0
        train_stack_epoch(stack, opt, torch.from_numpy(faces[:n_images]), cfgs, 1, step)
        return calls["n"]

    assert syncs(16) == syncs(40) <= 1  # 2 steps vs 5 steps: one read, at the end of the epoch
