"""Command line: ``python -m src <command>``. Every command is ``main(argv)``-callable.

Commands:
  data sample     write the procedural face sample (the embedded default dataset)
  data download   fetch the Kaggle Flickr-Faces thumbnails (needs kagglehub + credentials)
  train           train one model
  evaluate        write RUN_DIR/metrics.json (val/test x clean/noisy)
  reproduce       the whole study: grid, summary, figures, tables, README section
  report          figures and tables again from stored results, without training
  analyze         noise sweep of a finished grid (evaluation only), its figures and claim verdicts
  rd              rate-distortion curves (real bytes) of a finished grid vs PCA, JPEG, WebP, JPEG 2000
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from pathlib import Path

from .utils import UserError


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _nonneg_float(s: str) -> float:
    v = float(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def _pos_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def _fractions(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.7,0.1,0.2, got {s}") from None


def build_parser() -> argparse.ArgumentParser:
    from .compression import CODERS
    from .experiments import MODEL_NAMES, PRESETS
    from .rd import RD_PRESETS
    from .regularization import KINDS

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = Parser(prog="python -m src", description="AE / VAE face compression study.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    data = sub.add_parser("data", help="make or fetch datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    s = dsub.add_parser("sample", help="write the procedural face sample as PNG files", formatter_class=fmt)
    s.add_argument("--n", type=_pos_int, default=2000, help="number of faces")
    s.add_argument("--out", default="data/sample", help="output folder")
    s.add_argument("--seed", type=int, default=0, help="generator seed")
    s.add_argument("--size", type=_pos_int, default=128, help="image side, pixels")
    d = dsub.add_parser("download", help="download the Kaggle dataset with kagglehub", formatter_class=fmt)
    d.add_argument("--out", default="data/flickr", help="where the images are linked or copied")

    t = sub.add_parser("train", help="train one model", formatter_class=fmt)
    t.add_argument("--model", choices=MODEL_NAMES, default="ae", help="which model")
    t.add_argument("--reg", choices=KINDS, default="none", help="weight regularization")
    t.add_argument("--l1", type=_nonneg_float, default=1e-5, help="lambda_1")
    t.add_argument("--l2", type=_nonneg_float, default=1e-5, help="lambda_2")
    t.add_argument("--noise-train", type=_nonneg_float, default=0.0, metavar="SIGMA",
                   help="Gaussian noise sigma on training inputs (denoising training)")
    t.add_argument("--epochs", type=_pos_int, default=200, help="training epochs")
    t.add_argument("--batch-size", type=_pos_int, default=128, help="batch size")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--beta", type=_nonneg_float, default=1.0, help="VAE KL weight")
    t.add_argument("--latent", type=_pos_int, default=None, help="VAE latent dims (200) or AE bottleneck channels (4)")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--limit", type=_pos_int, default=None, help="use only the first N images")
    t.add_argument("--image-size", type=_pos_int, default=128, help="images are resized to this")
    t.add_argument("--split", type=_fractions, default=(0.7, 0.1, 0.2), metavar="TRAIN,VAL,TEST",
                   help="split fractions, summing to 1")
    _common(t)
    t.add_argument("--out", default=None, help="run folder (default: runs/<model>-<reg>)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--strict", action="store_true", help="a bad image file is an error instead of a skip")
    t.add_argument("--parallel-runs", type=_pos_int, default=1, metavar="N",
                   help="train trains one run, so only 1 is accepted; reproduce trains runs together")

    e = sub.add_parser("evaluate", help="evaluate a run's best weights on val and test", formatter_class=fmt)
    e.add_argument("run_dir", help="run folder written by train")
    e.add_argument("--noise", type=_nonneg_float, default=0.1, help="sigma of the noisy-input condition")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("reproduce", help="run the whole study, then the report", formatter_class=fmt)
    r.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="size of the study")
    _common(r)
    r.add_argument("--seeds", type=_pos_int, default=None, metavar="N",
                   help="seeds 0..N-1 per grid cell (default: the preset's)")
    r.add_argument("--parallel-runs", type=_pos_int, default=None, metavar="N",
                   help="runs of one model trained together as one stacked model, 1 = one at a time "
                        "(default: all of a model's on a CUDA GPU; 1 on a CPU, where stacking measured slower)")
    r.add_argument("--out", default=None, help="output folder (default: runs/<preset>)")
    r.add_argument("--figures", default=None, help="figure folder (default: Figures, or OUT/Figures for smoke)")
    r.add_argument("--readme", default=None,
                   help="README whose results section is replaced (default: README.md, none for smoke)")

    rd = sub.add_parser("rd", help="rate-distortion JSON (real bytes) from a finished grid", formatter_class=fmt)
    rd.add_argument("runs_dir", help="output folder of reproduce")
    rd.add_argument("--sweep", choices=sorted(RD_PRESETS), default=None,
                    help="size of the sweep (default: the grid's preset)")
    rd.add_argument("--coder", choices=("auto", *CODERS), default="auto", help="lossless coder of the latents")
    rd.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")

    an = sub.add_parser("analyze", help="noise sweep of a finished grid, its figures, tables and claim verdicts",
                        formatter_class=fmt)
    an.add_argument("runs_dir", help="output folder of reproduce")
    an.add_argument("--figures", default="Figures", help="figures go to FIGURES/<preset>/")
    an.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")

    rp = sub.add_parser("report", help="figures and tables from stored results only", formatter_class=fmt)
    rp.add_argument("runs_dir", help="output folder of reproduce")
    rp.add_argument("--figures", default="Figures", help="figure folder")
    rp.add_argument("--readme", default="README.md", help="README to update ('' = none)")
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="image folder (default: data/flickr if present, else the generated data/sample)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_data(a: argparse.Namespace) -> int:
    if a.data_command == "sample":
        from .synthetic import write_sample

        paths = write_sample(a.out, n=a.n, seed=a.seed, size=a.size)
        print(f"{len(paths)} faces in {a.out}")
        return 0
    return download(Path(a.out))


KAGGLE_ID = "imcr00z/flickr-faces-70k-thumbnails-128x128"
MANUAL_STEPS = (f"download https://www.kaggle.com/datasets/{KAGGLE_ID} by hand, unzip it, and put the "
                "images (any layout) under data/flickr/")


def download(out: Path) -> int:
    """Fetch with kagglehub and link the download into ``out``; clear manual steps otherwise."""
    try:
        import kagglehub
    except ImportError:
        raise UserError(f"kagglehub is not installed (pip install kagglehub); or {MANUAL_STEPS}") from None
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_ID))
    except Exception as e:  # no credentials, no network, ...: kagglehub raises many types
        raise UserError(f"kagglehub could not download {KAGGLE_ID} ({type(e).__name__}: {e}); "
                        f"set Kaggle credentials, or {MANUAL_STEPS}") from None
    if out.exists():
        raise UserError(f"{out} already exists; the download is at {path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(path.resolve(), target_is_directory=True)
    print(f"dataset downloaded to {path}; linked as {out}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from .data import DataConfig, load_dataset, resolved
    from .models import ModelConfig
    from .regularization import RegConfig
    from .train import RunConfig, TrainConfig, fit

    if a.parallel_runs != 1:
        raise UserError(f"train trains one run, so --parallel-runs {a.parallel_runs} has nothing to train together; "
                        "use: python -m src reproduce --parallel-runs N")
    latent = {} if a.latent is None else ({"vae_latent": a.latent} if a.model == "vae" else {"ae_latent": a.latent})
    data_cfg = DataConfig(root=a.data, image_size=a.image_size, limit=a.limit, strict=a.strict, split=a.split)
    cfg = RunConfig(model=ModelConfig(name=a.model, image_size=a.image_size, **latent),
                    reg=RegConfig(kind=a.reg, l1=a.l1, l2=a.l2),
                    train=TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, beta=a.beta,
                                      noise_train=a.noise_train, seed=a.seed, device=a.device,
                                      progress=not a.no_progress),
                    data=data_cfg)
    out = Path(a.out or f"runs/{a.model}-{a.reg}" + (f"-noise{a.noise_train:g}" if a.noise_train else ""))
    _check_out(out)
    faces = load_dataset(data_cfg, progress=not a.no_progress)
    cfg.data = resolved(cfg.data, faces)  # absolute root + file-list digest, checked by every later load
    result = fit(cfg, faces.images, out, resume=a.resume)
    print(f"trained {out}: best epoch {result['best_epoch']} (val loss {result['best_val']:.5g}); "
          f"next: python -m src evaluate {out}")
    return 0


def _check_out(out: Path) -> None:
    from .experiments import check_output_dir

    check_output_dir(out)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .data import load_dataset
    from .evaluation import evaluate_run
    from .train import RunConfig, pick_device
    from .utils import read_json

    run_dir = Path(a.run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} is not a run folder (no config.json); train one with: python -m src train")
    cfg = RunConfig.from_dict(read_json(run_dir / "config.json"))
    faces = load_dataset(cfg.data, progress=not a.no_progress)
    m = evaluate_run(run_dir, faces.images, [("clean", 0.0), ("gaussian", a.noise)], device=pick_device(a.device))
    for split in ("val", "test"):
        for cond, v in m[split].items():
            print(f"{split:4s} {cond:15s} MSE {v['mse']:.5f}  PSNR {v['psnr']:.2f} dB  SSIM {v['ssim']:.4f}")
    print(f"wrote {run_dir / 'metrics.json'}")
    return 0


def cmd_reproduce(a: argparse.Namespace) -> int:
    from .experiments import PRESETS, run_grid

    preset = PRESETS[a.preset]
    if a.seeds is not None:
        from dataclasses import replace

        preset = replace(preset, seeds=tuple(range(a.seeds)))
    out = Path(a.out or f"runs/{preset.name}")
    smoke = preset.name == "smoke"
    figures = Path(a.figures) if a.figures else (out / "Figures" if smoke else Path("Figures"))
    readme = a.readme if a.readme is not None else ("" if smoke else "README.md")
    run_grid(preset, out, data_root=a.data, device=a.device, progress=not a.no_progress,
             parallel_runs=a.parallel_runs)
    if preset.name.startswith("analysis"):
        from .sweeps import run_analysis

        run_analysis(preset, out, data_root=a.data, device=a.device, progress=not a.no_progress)
    else:  # the analysis report has no rate-distortion section: its CPU budget goes to the sweeps
        _rd(out, preset.name, "auto", a.device, force=False)  # a finished grid with current curves: nothing to do
    return _report(out, figures, readme)


def cmd_rd(a: argparse.Namespace) -> int:
    from .results import load_summary, preset_of

    preset = a.sweep or preset_of(load_summary(Path(a.runs_dir)).get("grid")).get("name", "quick")
    _rd(Path(a.runs_dir), preset, a.coder, a.device)
    return 0


def _rd(out: Path, preset: str, coder: str, device: str, force: bool = True) -> None:
    from dataclasses import replace

    from .rd import RD_PRESETS, RDConfig, run_rd
    from .train import pick_device

    index = run_rd(out, replace(RD_PRESETS.get(preset, RDConfig()), coder=coder), device=pick_device(device),
                   force=force)
    print(f"rd: {len(index['methods'])} curves on {index['n_test']} test images in {out / 'rd'}")


def cmd_analyze(a: argparse.Namespace) -> int:
    from .claims import check_claims
    from .figdata import write_figure_data
    from .report import analysis_report
    from .sweeps import noise_sweep
    from .train import pick_device

    runs_dir = Path(a.runs_dir)
    noise_sweep(runs_dir, pick_device(a.device))
    write_figure_data(runs_dir)
    check_claims(runs_dir)
    written = analysis_report(runs_dir, Path(a.figures), readme=None, grid_figures=False)
    print(f"analyze: {len(written)} files written; tables and verdicts in {runs_dir / 'analysis.md'}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    return _report(Path(a.runs_dir), Path(a.figures), a.readme)


def _report(out: Path, figures: Path, readme: str) -> int:
    from .claims import check_claims
    from .figdata import write_figure_data
    from .report import report
    from .results import is_analysis, load_summary

    summary = load_summary(out)
    write_figure_data(out, summary)  # the shown images, from the weights; the report itself reads the store only
    if is_analysis(summary):
        check_claims(out, summary)  # its verdicts and paired tables, read by the analysis report
    written = report(out, figures, Path(readme) if readme else None)
    print(f"report: {len(written)} files written under {figures}" + (f"; {readme} updated" if readme else ""))
    return 0


_IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}

COMMANDS = {"data": cmd_data, "train": cmd_train, "evaluate": cmd_evaluate, "rd": cmd_rd,
            "reproduce": cmd_reproduce, "report": cmd_report, "analyze": cmd_analyze}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *_: f"warning: {msg}\n"
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except OSError as e:  # the machine, not the code: say what failed and where, in one line
        if e.errno not in _IO_ERRNOS:
            raise
        fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "choose a writable --out"
        sys.stderr.write(f"error: {os.strerror(e.errno).lower()}: {e.filename or 'a file'}; results and "
                         f"checkpoints written before are kept: {fix} and run the same command again "
                         "(train: with --resume)\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished runs and checkpoints are kept, re-run the same command to continue\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
