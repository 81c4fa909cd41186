"""Command line: ``python -m src <command>``. Every command is ``main(argv)``-callable.

Commands:
  data sample     write the procedural face sample (the embedded default dataset)
  data stats      image statistics of any folder, next to face photographs' (PCA, JPEG bpp, spectrum)
  data download   fetch the Kaggle Flickr-Faces thumbnails (needs kagglehub + credentials)
  train           train one model (every config field is a flag)
  evaluate        write RUN_DIR/metrics.json (val/test x clean/noisy); --data DIR: metrics_NAME.json of another folder
  reproduce       the whole study: grid, rate-distortion, report in OUT (README, docs only with --publish)
  report          figures and tables again from stored results, without training
  analyze         noise sweep of a finished grid (evaluation only), its figures and claim verdicts
  rd              rate-distortion curves (real bytes) of a finished grid vs PCA, JPEG, WebP, JPEG 2000
  export          a weight-free results bundle of a grid (folder or .tar.gz)
  merge           bundles of one study (pieces: other seeds or models) into one results folder

torch is imported only by the commands that need it, so ``--help`` and argument errors are instant.
"""
from __future__ import annotations

import argparse
import errno
import functools
import inspect
import os
import re
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from .utils import UserError

EXAMPLES = """examples:
  python -m src reproduce                         the quick preview on the embedded faces (CPU is fine)
  python -m src reproduce --preset full --device cuda
  python -m src train --model vae --reg l2 --noise-train 0.1 --epochs 200 --out runs/my-vae
  python -m src report runs/quick --publish       README.md, docs/results.md, Figures/ from stored results
  python -m src data stats data/flickr            how a folder's images compare with face photographs
"""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" once, and only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.default not in (None, False, [], argparse.SUPPRESS) \
                and action.option_strings and not isinstance(action, argparse.BooleanOptionalAction):
            text += " (default: %(default)s)"
        return text


def positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def nonneg_float(s: str) -> float:
    v = float(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def fractions(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.7,0.1,0.2, got {s}") from None


positive_int.__name__ = "positive integer"  # argparse names the type in "invalid ... value" errors
nonneg_float.__name__ = "number"
fractions.__name__ = "fractions"


# ---------------------------------------------------------------- flags from the config dataclasses

FLAG_NAMES = {("model", "name"): "--model", ("reg", "kind"): "--reg", ("data", "root"): "--data"}
NOT_FLAGS = {("model", "image_size"), ("data", "n_images"), ("data", "files_sha256")}  # set from other flags / data


@functools.cache  # read once per process: every main() builds the parser, and the source may become unreadable
def field_help(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the dataclass's source: the one description of a setting."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):[^=]+=.*?#\s*(.+)$", line)
        if m:
            out[m[1]] = m[2].replace("%", "%%")
    return out


def _flag_type(annotation: str, default):
    if isinstance(default, tuple):
        return fractions
    for name, t in (("int", int), ("float", float)):
        if re.search(rf"\b{name}\b", annotation):
            return t
    return str


# train --help groups: each config field's flag goes to its section's group, the speed settings to their own
GROUPS = {"model": "model", "reg": "regularization", "train": "training", "data": "data"}
SPEED = {("train", n) for n in ("device", "amp", "channels_last", "compile", "fused_adam", "checkpoint_s")}


def add_config_flags(p: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One flag per field of ModelConfig, RegConfig, TrainConfig and DataConfig, defaults from the
    dataclasses, in the argument groups model, regularization, training, data and speed (returned by
    name); ``--image-size`` sets the model's and the data's together."""
    from .config import KINDS, MODEL_NAMES, SCOPES, SECTIONS

    choices = {("model", "name"): MODEL_NAMES, ("reg", "kind"): KINDS, ("reg", "scope"): SCOPES,
               ("train", "vae_recon"): ("bce", "mse")}
    groups = {name: p.add_argument_group(name) for name in (*GROUPS.values(), "speed")}
    for section, cls in SECTIONS.items():
        helps = field_help(cls)
        for f in fields(cls):
            if (section, f.name) in NOT_FLAGS:
                continue
            flag = FLAG_NAMES.get((section, f.name), "--" + f.name.replace("_", "-"))
            default = f.default
            kw = {"dest": f"{section}.{f.name}", "default": default, "help": helps.get(f.name, "")}
            if isinstance(default, bool):
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = _flag_type(str(f.type), default)
                if (section, f.name) in choices:
                    kw["choices"] = choices[(section, f.name)]
                else:
                    kw["metavar"] = f.name.upper()
            groups["speed" if (section, f.name) in SPEED else GROUPS[section]].add_argument(flag, **kw)
    return groups


def config_from_flags(a: argparse.Namespace):
    """The RunConfig the flags describe (the dataclasses validate it: a bad value is one line)."""
    from .config import SECTIONS, RunConfig

    values = {s: {} for s in SECTIONS}
    for key, v in vars(a).items():
        if "." in key:
            section, name = key.split(".", 1)
            values[section][name] = v
    values["model"]["image_size"] = values["data"]["image_size"]
    try:
        return RunConfig(**{s: cls(**values[s]) for s, cls in SECTIONS.items()})
    except UserError as e:  # "epochs must be >= 1" -> "--epochs must be >= 1": name the flag the user typed
        name = str(e).split(" ", 1)[0]
        flags = {f.name: FLAG_NAMES.get((s, f.name), "--" + f.name.replace("_", "-"))
                 for s, cls in SECTIONS.items() for f in fields(cls)}
        raise UserError(flags[name] + str(e)[len(name):] if name in flags else str(e)) from None


# ---------------------------------------------------------------- the parser

def build_parser() -> argparse.ArgumentParser:
    from .config import LATENT_CODERS, PRESETS, RD_PRESETS
    from .piece import add_piece_flags

    p = Parser(prog="python -m src", description="AE / VAE face compression study.", epilog=EXAMPLES,
               formatter_class=Formatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=Formatter)

    data = command("data", "make, measure or fetch datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser, metavar="WHAT")
    s = dsub.add_parser("sample", help="write the procedural face sample as PNG files", formatter_class=Formatter)
    s.add_argument("--n", type=positive_int, default=2000, help="number of faces")
    s.add_argument("--out", default="data/sample", help="output folder")
    s.add_argument("--seed", type=int, default=0, help="generator seed")
    s.add_argument("--size", type=positive_int, default=128, help="image side, pixels")
    s.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="processes rendering faces")
    _progress(s)
    st = dsub.add_parser("stats", help="image statistics of a folder, next to face photographs'",
                         formatter_class=Formatter)
    st.add_argument("dir", help="image folder (any layout; read through the project's loader at 128x128)")
    st.add_argument("--n", type=positive_int, default=None, help="use the first N images (sorted; default: all)")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _progress(st)
    d = dsub.add_parser("download", help="download the Kaggle dataset with kagglehub", formatter_class=Formatter)
    d.add_argument("--out", default="data/flickr", help="where the images are linked")

    t = command("train", "train one model; every field of the config dataclasses is a flag")
    t.add_argument("--out", default=None, help="run folder (default: runs/<model>-<reg>-<clean|noise<sigma>>-s<seed>, "
                                               "named as reproduce names a grid's runs)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    add_config_flags(t)

    e = command("evaluate", "evaluate a run's best weights on val and test (its stored split), or on another folder")
    e.add_argument("run_dir", help="run folder written by train")
    e.add_argument("--data", default=None, metavar="DIR",
                   help="score every image of DIR instead (read at the run's image size) into RUN_DIR/metrics_NAME.json "
                        "and per_image_NAME.npz; the run's own metrics.json is never touched")
    e.add_argument("--name", default=None, help="NAME of those files (default: DIR's folder name)")
    e.add_argument("--noise", type=nonneg_float, default=0.1, help="sigma of the noisy-input condition")
    _device(e)
    _progress(e)

    r = command("reproduce", "the whole study: grid, rate-distortion, report into OUT (README only with --publish)")
    r.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="size of the study")
    r.add_argument("--data", default=None, help="image folder (default: data/flickr if present, else the "
                                                "generated data/sample)")
    add_piece_flags(r)
    r.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="change a training or data setting of every run, e.g. --set train.lr=3e-4 (repeatable)")
    r.add_argument("--parallel-runs", type=int, default=None, metavar="N",
                   help="runs of one model trained together as one stacked model; 1 = one at a time, 0 = all "
                        "(default: all on a CUDA GPU; 1 on a CPU, where stacking measured slower)")
    r.add_argument("--rd-sweep", choices=sorted(RD_PRESETS) + ["none"], default=None,
                   help="rate-distortion sweep; none: no curves (default: the preset's own; none for the analysis "
                        "presets)")
    r.add_argument("--out", default=None, help="output folder (default: runs/<preset>)")
    r.add_argument("--keep-last", action="store_true", help="keep each run's last.pt once evaluated (to train further)")
    _publish(r, "OUT")
    _device(r)
    _progress(r)

    rd = command("rd", "rate-distortion JSON (real bytes) from a finished grid")
    rd.add_argument("runs_dir", help="output folder of reproduce")
    rd.add_argument("--sweep", choices=sorted(RD_PRESETS), default=None,
                    help="size of the sweep (default: the grid's preset)")
    rd.add_argument("--coder", choices=("auto", *LATENT_CODERS), default="auto", help="lossless coder of the latents")
    _device(rd)
    _progress(rd)  # the extra latent sizes' training

    an = command("analyze", "noise sweep of a finished grid, its figures, tables and claim verdicts")
    an.add_argument("runs_dir", help="output folder of reproduce")
    _figures(an, "RUNS_DIR/Figures")
    _device(an)

    rp = command("report", "figures and tables from stored results only (RUNS_DIR/REPORT.md, RUNS_DIR/Figures)")
    rp.add_argument("runs_dir", help="output folder of reproduce, or an exported bundle")
    _publish(rp, "RUNS_DIR")

    ex = command("export", "write a weight-free results bundle of a grid (a folder, or a .tar.gz)")
    ex.add_argument("runs_dir", help="output folder of reproduce")
    ex.add_argument("dest", help="ARCHIVE.tar.gz, or a new folder such as results/full-synthetic")

    mg = command("merge", "merge bundles of one study (other seeds or models) into one results folder")
    mg.add_argument("bundles", nargs="+", metavar="BUNDLE",
                    help="bundle folders or .tar.gz (reproduce --bundle, export)")
    mg.add_argument("--into", required=True, help="results folder, created or added to (e.g. results/full-synthetic)")
    return p


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps")


def _progress(p: argparse.ArgumentParser) -> None:
    """The flag ``train`` has from TrainConfig.progress, on every other command that draws bars."""
    from .config import TrainConfig

    p.add_argument("--progress", default=TrainConfig.progress, action=argparse.BooleanOptionalAction,
                   help=field_help(TrainConfig)["progress"])


def _figures(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--figures", default=None, help=f"figure folder (default: {default}); an analysis grid's "
                                                   "figures and analyze's go to its <preset>/ subfolder")


def _publish(p: argparse.ArgumentParser, folder: str) -> None:
    p.add_argument("--publish", action="store_true",
                   help="also write Figures/, the README's headline and docs/results.md (the published results)")
    _figures(p, f"{folder}/Figures; Figures with --publish")
    p.add_argument("--readme", default=None, help="README to update, and docs/results.md beside it (default: none)")


# ---------------------------------------------------------------- commands

def cmd_data(a: argparse.Namespace) -> int:
    if a.data_command == "sample":
        from .sample import write_sample

        paths = write_sample(a.out, n=a.n, seed=a.seed, size=a.size, workers=a.workers, progress=a.progress)
        print(f"{len(paths)} faces in {a.out}")
        return 0
    if a.data_command == "stats":
        from .imagestats import stats_command

        return stats_command(a.dir, a.n, a.json, progress=a.progress)
    from .data import download

    return download(Path(a.out))


def cmd_train(a: argparse.Namespace) -> int:
    cfg = config_from_flags(a)  # a bad value fails here, before torch is imported

    from .data import load_dataset, resolved
    from .experiments import check_output_dir
    from .runs import run_name
    from .train import fit
    out = Path(a.out or Path("runs") / run_name(cfg.model.name, cfg.reg.kind, cfg.train.noise_train, cfg.train.seed))
    check_output_dir(out)
    faces = load_dataset(cfg.data, progress=cfg.train.progress)
    cfg.data = resolved(cfg.data, faces)  # absolute root + file-list digest, checked by every later load
    result = fit(cfg, faces.images, out, resume=a.resume)
    print(f"trained {out}: best epoch {result['best_epoch']} (val loss {result['best_val']:.5g}); "
          f"next: python -m src evaluate {out}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .config import DataConfig, RunConfig
    from .data import load_dataset
    from .evaluation import evaluate_folder, evaluate_run, folder_name
    from .train import pick_device
    from .utils import read_json

    run_dir = Path(a.run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} is not a run folder (no config.json); train one with: python -m src train")
    cfg = RunConfig.from_dict(read_json(run_dir / "config.json"))
    conditions = [("clean", 0.0), ("gaussian", a.noise)]
    if a.data is not None:
        name = folder_name(a.data, a.name)
        faces = load_dataset(DataConfig(root=a.data, image_size=cfg.model.image_size, cache_dir=cfg.data.cache_dir),
                             progress=a.progress)
        m = evaluate_folder(run_dir, faces, name, conditions, device=pick_device(a.device))
        _print_metrics({"all": m["all"]})
        print(f"{m['data']['n_images']} images of {m['data']['root']}; wrote {run_dir / f'metrics_{name}.json'} "
              "(the run's own metrics.json is unchanged)")
        return 0
    faces = load_dataset(cfg.data, progress=a.progress)
    m = evaluate_run(run_dir, faces.images, conditions, device=pick_device(a.device))
    _print_metrics({split: m[split] for split in ("val", "test")})
    print(f"{m['convergence']['label']}: {m['convergence']['why']}; wrote {run_dir / 'metrics.json'}")
    return 0


def _print_metrics(rows: dict[str, dict[str, dict[str, float]]]) -> None:
    for split, conds in rows.items():
        for cond, v in conds.items():
            print(f"{split:4s} {cond:15s} MSE {v['mse']:.5f}  PSNR {v['psnr']:.2f} dB  SSIM {v['ssim']:.4f}")


def cmd_reproduce(a: argparse.Namespace) -> int:
    from .pipeline import outputs, reproduce

    out = Path(a.out or f"runs/{a.preset}")
    figures, readme = outputs(out, a.publish, a.figures, a.readme)
    settings = a.set + ["train.keep_last=true"] * a.keep_last
    r = reproduce(a.preset, out, data=a.data, device=a.device, seeds=a.seeds,
                  models=a.models, runs=a.runs, settings=settings,
                  parallel_runs=a.parallel_runs, rd_sweep=a.rd_sweep, figures=figures, readme=readme,
                  budget_s=a.budget_s, images_per_s=a.images_per_s, bundle=a.bundle, progress=a.progress)
    if r["report"] is None:  # under torchrun: rank 0 says it
        return 0
    published = f"; published to {readme} and {figures}" if readme else ""
    minutes, seconds = divmod(round(r["seconds"]), 60)
    print(f"reproduce: {r['runs']} runs ({r['converged']} converged) in {minutes} min {seconds} s; results in "
          f"{out}/REPORT.md and {figures}{published}; next: python -m src report {out} --publish")
    return 0


def cmd_rd(a: argparse.Namespace) -> int:
    from .pipeline import rd

    rd(a.runs_dir, a.sweep, a.coder, a.device, progress=a.progress)
    return 0


def cmd_analyze(a: argparse.Namespace) -> int:
    from .pipeline import analyze

    analyze(a.runs_dir, a.figures, a.device)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from .pipeline import outputs, report

    out = Path(a.runs_dir)
    report(out, *outputs(out, a.publish, a.figures, a.readme))
    return 0


def cmd_merge(a: argparse.Namespace) -> int:
    from .merge import merge

    merge(a.bundles, a.into)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export

    files = export(a.runs_dir, a.dest)
    print(f"export: {len(files)} files (no weights) in {a.dest}")
    return 0


_IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}

COMMANDS = {"data": cmd_data, "train": cmd_train, "evaluate": cmd_evaluate, "rd": cmd_rd, "export": cmd_export,
            "reproduce": cmd_reproduce, "report": cmd_report, "analyze": cmd_analyze, "merge": cmd_merge}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *_: f"warning: {msg}\n"
    try:
        device = getattr(args, "device", None) or getattr(args, "train.device", "auto")
        if device != "auto":  # refused in one line before any data or result is read
            from .train import pick_device
            pick_device(device)
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
