"""Evaluation reads what training stored: the split, the data folder's fingerprint; and flags convergence."""
import json

import numpy as np
import pytest
from PIL import Image

from src.__main__ import main
from src.evaluation import CONVERGED_MIN_EPOCHS, CONVERGED_REL, convergence
from src.utils import save_npz


def _rows(losses):
    return [{"epoch": i + 1, "val_loss": v} for i, v in enumerate(losses)]


def test_a_plateau_is_converged_and_a_falling_loss_is_not():
    plateau = convergence(_rows([10, 5, 3, 2.5, 2.2, 2.1, 2.05, 2.03, 2.02, 2.019]))  # tail: the last epoch
    assert plateau["converged"] and plateau["tail_epochs"] == 1
    assert plateau["rel_improvement"] == pytest.approx((2.02 - 2.019) / 2.02)
    falling = convergence(_rows([10, 9, 8, 7, 6, 5, 4, 3, 2, 1]))
    assert not falling["converged"] and falling["rel_improvement"] == pytest.approx(0.5)
    # the threshold is a strict bound on the relative improvement of the best loss
    edge = convergence(_rows([1.0] * 9 + [1.0 - CONVERGED_REL]))
    assert not edge["converged"]
    # a best epoch early on, then worse epochs (overfitting): no improvement in the tail, converged
    assert convergence(_rows([5, 3, 2, 2.5, 2.6, 2.7, 2.8, 2.9, 3, 3.1]))["converged"]


def test_labels_tell_a_plateau_from_overfitting():
    assert convergence(_rows([10, 5, 3, 2.5, 2.2, 2.1, 2.05, 2.03, 2.02, 2.019]))["label"] == "plateau"
    assert convergence(_rows([10, 9, 8, 7, 6, 5, 4, 3, 2, 1]))["label"] == "still improving"
    assert convergence(_rows([3.0]))["label"] == "too short"
    # best at epoch 3 of 10 (2.0), then up to 3.1: (3.1 - 2) / 2 = 55% above the best
    over = convergence(_rows([5, 3, 2, 2.5, 2.6, 2.7, 2.8, 2.9, 3, 3.1]))
    assert over["converged"] and over["label"] == "overfitting" and over["best_epoch"] == 3
    assert over["rise"] == pytest.approx(0.55)
    assert over["why"] == "best at epoch 3 of 10, validation loss rising since (+55% by epoch 10)"
    # the quick preset's VAE: best at epoch 9 of 20, then slowly worse
    vae = convergence(_rows([900 - 10 * i for i in range(9)] + [820 + 2 * i for i in range(11)]))
    assert vae["label"] == "overfitting" and vae["why"].startswith("best at epoch 9 of 20, validation loss rising since")
    # a late best (epoch 9 of 10: less than two tails ago) or a rise under the threshold is a plateau
    assert convergence(_rows([5, 4, 3, 2.5, 2.2, 2.1, 2.05, 2.03, 2.0, 2.1]))["label"] == "plateau"
    small = [5, 3, 2, 2.001, 2.002, 2.003, 2.004, 2.005, 2.006, 2.0 * (1 + CONVERGED_REL) - 0.001]
    assert convergence(_rows(small))["label"] == "plateau"


def test_short_runs_are_never_converged():
    c = convergence(_rows([3.0]))
    assert not c["converged"] and c["rel_improvement"] is None and "too few" in c["why"]
    flat = convergence(_rows([3.0] * (CONVERGED_MIN_EPOCHS - 1)))  # flat, but too short to call a plateau
    assert not flat["converged"] and "too few" in flat["why"]


@pytest.fixture()
def trained(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "faces"
    data.mkdir()
    for k in range(30):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(data / f"{k:03d}.png")
    run = tmp_path / "run"
    assert main(["train", "--model", "ae", "--epochs", "2", "--data", str(data), "--image-size", "32",
                 "--out", str(run), "--no-progress"]) == 0
    return data, run


def test_evaluate_uses_the_stored_split_and_records_convergence(trained):
    data, run = trained
    split = dict(np.load(run / "split.npz"))
    split["val"], split["test"] = split["val"][:2], split["test"][:3]  # a split no seed would give
    save_npz(run / "split.npz", split)
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["val"]["clean"]["n"] == 2 and m["test"]["clean"]["n"] == 3
    assert m["convergence"]["epochs"] == 2 and isinstance(m["convergence"]["converged"], bool)
    cfg = json.loads((run / "config.json").read_text())["data"]
    assert cfg["root"] == str(data.resolve()) and cfg["n_images"] == 30  # absolute: works from any folder


@pytest.mark.parametrize("change", ["add", "rename"])
def test_evaluate_refuses_a_data_folder_that_changed_since_training(trained, capsys, change):
    data, run = trained
    if change == "add":
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "new.png")
    else:
        (data / "005.png").rename(data / "zzz.png")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed since these runs were trained" in err[0] and str(data.resolve()) in err[0]
    assert ("now 31" in err[0]) if change == "add" else ("another file list" in err[0])
    assert not (run / "metrics.json").exists()


class _RunsCode:
    """Pickles as a call of os.system: what a shared checkpoint could smuggle in."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_a_checkpoint_holding_a_foreign_object_is_refused_and_never_run(trained, capsys):
    import torch

    _, run = trained
    marker = run.parent / "code-ran"
    best = torch.load(run / "best.pt", weights_only=False)  # our own file: trusted here
    torch.save({**best, "extra": _RunsCode(f"touch {marker}")}, run / "best.pt")
    before = (run / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert len(err) == 1 and str(run / "best.pt") in err[0] and "refused" in err[0], err
    assert (run / "best.pt").read_bytes() == before and not (run / "metrics.json").exists()


def test_a_checkpoint_with_an_entry_save_torch_never_writes_is_refused(trained, capsys):
    import torch

    _, run = trained
    best = torch.load(run / "best.pt", weights_only=False)
    torch.save({**best, "note": "plain data, but not a key of this project's checkpoints"}, run / "best.pt")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'note'" in err[0] and "refused" in err[0], err


def _row(psnr, ssim, label="plateau"):
    return {"test": {"clean": {"psnr": psnr, "ssim": ssim}},
            "convergence": {"label": label, "why": "best at epoch 9 of 20, validation loss rising since (+4% by epoch 20)"}}


BASE = {"test": {"mean image": {"psnr": 12.7, "ssim": 0.35}, "PCA-200": {"psnr": 23.0, "ssim": 0.8}}}


def test_a_run_at_the_mean_image_is_flagged_with_the_reason():
    from src.results import mean_image_flag, run_flags

    # the quick preset's VAE: 13.5 dB is 0.8 dB above the mean image's 12.7, its SSIM 0.30 below 0.35
    flags = run_flags(_row(13.5, 0.30, "overfitting"), BASE)
    assert flags["at the mean image"] == ("test PSNR 13.5 dB, within 1 dB of the mean image's 12.7 dB; "
                                          "test SSIM 0.300, below the mean image's 0.350")
    assert flags["overfitting"].startswith("best at epoch 9 of 20")
    assert mean_image_flag({"psnr": 20.0, "ssim": 0.2}, BASE) == "test SSIM 0.200, below the mean image's 0.350"
    assert mean_image_flag({"psnr": 13.5, "ssim": 0.5}, BASE).startswith("test PSNR 13.5 dB, within 1 dB")
    assert run_flags(_row(14.0, 0.5), BASE) == {}  # 1.3 dB above, SSIM above: a model that does something
    assert run_flags(_row(13.0, 0.1), None) == {}  # no baselines: nothing to compare with
def test_evaluate_data_scores_every_image_of_another_folder_beside_the_runs_own_metrics(trained, tmp_path, capsys):
    import torch

    from src.decode import decode_image
    from src.evaluation import load_run

    _, run = trained
    assert main(["evaluate", str(run), "--no-progress", "--device", "cpu"]) == 0
    own = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    photos = tmp_path / "my photos"  # another size (read at the run's 32 px) and a name with a space
    photos.mkdir()
    rng = np.random.default_rng(1)
    for k in range(7):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(photos / f"p{k}.png")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(photos), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "7 images of" in out and "metrics_my-photos.json" in out
    assert all((run / name).read_bytes() == data for name, data in own.items())  # nothing of the run changed
    m = json.loads((run / "metrics_my-photos.json").read_text())
    assert m["all"]["clean"]["n"] == 7 and m["data"]["n_images"] == 7 and m["run"] == "run"
    per = np.load(run / "per_image_my-photos.npz")
    # independently: each file decoded at 32 px, reconstructed by the best weights, squared error averaged
    model, _ = load_run(run)
    x = torch.from_numpy(np.stack([decode_image(photos / f"p{k}.png", 32) for k in range(7)])).float()[:, None] / 255
    with torch.no_grad():
        mse = ((model(x)["x_hat"] - x) ** 2).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(per["all/clean/mse"], mse, rtol=1e-5)
    assert m["all"]["clean"]["mse"] == pytest.approx(float(mse.mean()), rel=1e-5)
    assert len(per["all/gaussian_0.1/psnr"]) == 7

    assert main(["evaluate", str(run), "--data", str(photos), "--name", "phone", "--no-progress"]) == 0
    assert (run / "metrics_phone.json").exists()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(photos), "--name", "../x", "--no-progress"]) == 2
    assert main(["evaluate", str(run), "--data", str(tmp_path / "none"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--name '../x'" in err[0] and "no image folder" in err[1], err
