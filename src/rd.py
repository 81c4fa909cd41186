"""Rate–distortion study: every method on the same test images, counted in real bytes.

``run_rd(runs_dir)`` reads a finished grid and writes ``runs_dir/rd/``::

    index.json           dataset, preset, test images, coder, date, the list of method files
    <method>.json        one curve per method, CompressAI's shape:
                         {"name", "description", "results": {"bpp", "psnr", "ssim", ...}}

Methods: the AE and the VAE of the grid (clean-trained, no regularization, lowest seed)
with their latents quantized to b bits and entropy-coded (``compression.encode_latent``);
optional extra AE / VAE latent sizes (trained on first use); PCA (fit on train) through the same
quantize-and-code path, keeping the Pareto front over (k, b); JPEG, WebP and JPEG 2000
through Pillow; the mean image (0 bytes per image). Every point is the mean over test
images of per-image bytes, PSNR and SSIM, and every image's bytes are decoded back before
it is scored.

The report reads only these JSON files (``results.load_rd``): ``report.figures.rd_figures``
draws ``rd_psnr.png`` / ``rd_ssim.png`` and ``report.readme.rd_markdown`` writes the README
subsection. The extra latent sizes are trained by ``experiments.train_latent_variant``.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import compression as C
from .config import RDConfig, RunConfig
from .data import eval_batches, to_float
from .eta import RD_MODELS, rd_progress
from .evaluation import load_run
from .experiments import train_latent_variant
from .metrics import all_metrics, psnr, ssim
from .parallel import WorkerPool
from .pca import PCA
from .results import RD_DIR, load_rd, load_summary, preset_of, read_config, run_data, runs_by_cell
from .utils import UserError, write_json

REFERENCE_BITS = 8  # the b at which the main tables quote coded bytes per image




# ---------------------------------------------------------------- points

def _point(setting: str, n_bytes: np.ndarray, pixels: int, metrics: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Means over images: bytes, bpp, PSNR, SSIM (per-image values first, as everywhere)."""
    return {"setting": setting, "bytes": float(np.mean(n_bytes)), "bpp": C.bpp(float(np.mean(n_bytes)), pixels),
            "psnr": float(metrics["psnr"].mean()), "ssim": float(metrics["ssim"].mean())}


def _code_latents(latents: np.ndarray, bits: int, coder: str,
                  pool: WorkerPool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, ...) latents -> decoded (N, ...) float32 latents and the (N,) byte counts (in ``pool``'s workers)."""
    coded = list((pool or WorkerPool(1)).map(C.latent_job, [(z, bits, coder) for z in latents]))
    return np.stack([z for _, z in coded]), np.array([n for n, _ in coded])


@torch.no_grad()
def model_points(model: torch.nn.Module, images_u8: np.ndarray, bits: tuple[int, ...],
                 coder: str = "auto", pool: WorkerPool | None = None) -> list[dict[str, Any]]:
    """AE (feature map z) or VAE (posterior mean mu): quantize, code, decode, score, per b."""
    model.eval()
    device = next(model.parameters()).device
    pixels = images_u8.shape[1] * images_u8.shape[2]
    xs = list(eval_batches(images_u8, device))
    latents = []
    for x in xs:
        z = model.encode(x)
        latents.append((z[0] if isinstance(z, tuple) else z).cpu().numpy())  # VAE: (mu, logvar) -> mu
    points = []
    for b in bits:
        parts: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
        n_bytes = []
        for x, z in zip(xs, latents):
            z_hat, nb = _code_latents(z, b, coder, pool)
            x_hat = model.decode(torch.from_numpy(z_hat).to(device))
            m = all_metrics(x_hat, x)
            parts["psnr"].append(m["psnr"].cpu())
            parts["ssim"].append(m["ssim"].cpu())
            n_bytes.append(nb)
        points.append(_point(f"b={b}", np.concatenate(n_bytes), pixels, {k: torch.cat(v) for k, v in parts.items()}))
    return points


def pca_points(pca: PCA, test_u8: np.ndarray, ks: tuple[int, ...], bits: tuple[int, ...],
               coder: str = "auto", front_only: bool = False, pool: WorkerPool | None = None) -> list[dict[str, Any]]:
    """Every (k, b) of a fitted PCA (k capped by its components), coded like the latents.

    With ``front_only`` only the Pareto front by PSNR is returned; SSIM, the costly metric,
    is then computed for those points only.
    """
    pixels = test_u8.shape[1] * test_u8.shape[2]
    x = to_float(test_u8)
    codes_all = pca.encode(test_u8).numpy()  # (N, k_max); the first k columns are PCA-k's code
    candidates = []
    for k in sorted({min(k, pca.components.shape[0]) for k in ks}):
        for b in bits:
            z_hat, nb = _code_latents(np.ascontiguousarray(codes_all[:, :k]), b, coder, pool)
            x_hat = pca.truncate(k).decode(torch.from_numpy(z_hat))
            candidates.append({"setting": f"k={k}, b={b}", "bytes": float(np.mean(nb)),
                               "bpp": C.bpp(float(np.mean(nb)), pixels), "psnr": float(psnr(x_hat, x).mean()),
                               "x_hat": x_hat})
    points = pareto(candidates) if front_only else candidates
    for p in points:
        p["ssim"] = float(ssim(p.pop("x_hat"), x).mean())
    return points


def codec_points(codec: str, settings: tuple[float, ...], test_u8: np.ndarray,
                 pool: WorkerPool | None = None) -> list[dict[str, Any]]:
    """One point per codec setting; bytes are the encoded buffers' lengths (coded in ``pool``'s workers)."""
    pixels = test_u8.shape[1] * test_u8.shape[2]
    x = to_float(test_u8)
    label = "rate" if codec == "jpeg2000" else "q"
    points = []
    for s in settings:
        coded = list((pool or WorkerPool(1)).map(C.codec_job, [(img, codec, s) for img in test_u8]))
        decoded = np.stack([img for _, img in coded])
        points.append(_point(f"{label}={s:g}", np.array([n for n, _ in coded]), pixels,
                             all_metrics(to_float(decoded), x)))
    return points


def pareto(points: list[dict[str, Any]], metric: str = "psnr") -> list[dict[str, Any]]:
    """Points that no other point beats with fewer or equal bytes; sorted by bpp."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p["bpp"], -p[metric])):
        if p[metric] > best:
            front.append(p)
            best = p[metric]
    return front


def curve(name: str, description: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """CompressAI's result shape (plus per-point bytes and settings), sorted by bpp."""
    points = sorted(points, key=lambda p: p["bpp"])
    keys = ("bpp", "psnr", "ssim", "bytes", "setting")
    return {"name": name, "description": description, "results": {k: [p[k] for p in points] for k in keys}}


# ---------------------------------------------------------------- the study

def _table_pca_k(summary: dict) -> int | None:
    rows = ((summary.get("baselines") or {}).get("test") or {})
    return next((int(r.split("-")[1]) for r in rows if r.startswith("PCA-")), None)


def _fingerprint(runs_dir: Path, summary: dict, cfg: RDConfig) -> dict[str, Any]:
    """What the curves depend on: the sweep and each grid run's best weights (name, size, mtime)."""
    best = {r["run"]: runs_dir / r["run"] / "best.pt" for r in summary["runs"]}
    return {"config": asdict(cfg), "runs": {k: [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None
                                            for k, p in sorted(best.items())}}


def _base_runs(runs_dir: Path, summary: dict) -> list[tuple[str, Path]]:
    """(model, run folder) of the grid's clean-trained, unregularized AE and VAE (lowest seed)."""
    cells = runs_by_cell(summary)
    runs = [(m, runs_dir / cells[(m, "none", 0.0)]) for m in ("ae", "vae") if (m, "none", 0.0) in cells]
    if not runs:
        raise UserError(f"{runs_dir} has no finished clean-trained, unregularized run; run the grid first")
    return runs


def _model_curves(runs_dir: Path, base: list[tuple[str, Path]], cfg: RDConfig, data: dict[str, np.ndarray],
                  test: np.ndarray, device: str | torch.device, log: Callable[[str], None],
                  progress: bool | None = None, pool: WorkerPool | None = None) -> tuple[dict[str, dict], dict[str, dict]]:
    """b sweeps of the ``base`` runs and of their extra latent sizes."""
    runs: list[tuple[str, Path, int | None]] = [(m, run, None) for m, run in base]
    grid = [(r, RunConfig.from_dict(read_config(r))) for r in sorted(runs_dir.iterdir()) if (r / "metrics.json").exists()]
    for m, run in base:
        run_cfg = RunConfig.from_dict(read_config(run))
        if progress is not None:  # a display setting: the variants' fingerprint (RESUMABLE) does not change
            run_cfg = replace(run_cfg, train=replace(run_cfg.train, progress=progress))
        for latent in (cfg.ae_latents if m == "ae" else cfg.vae_latents):
            out = runs_dir / RD_MODELS / f"{m}-latent{latent}"
            rd_progress(runs_dir, cfg, grid, f"rd: {m}-latent{latent}")  # progress.log: the ETA of the step
            runs.append((m, train_latent_variant(run_cfg, latent, data["all"], out, log), latent))
    rd_progress(runs_dir, cfg, grid, "rd: coding")
    curves, models = {}, {}
    for m, run, latent in runs:
        net, run_cfg = load_run(run, device)
        shape = "x".join(map(str, net.latent_shape))
        key, label = (m, m.upper()) if latent is None else (f"{m}-latent{latent}", f"{m.upper()} (latent {shape})")
        what = {"ae": "feature map z", "vae": "posterior mean mu"}[m]
        log(f"rd: {key} ({shape} latent), b in {list(cfg.bits)}")
        curves[key] = curve(label, f"{m.upper()} {run.name}: {what} ({shape}) quantized per image to b bits, "
                                   f"{cfg.coder} coder, 9-byte header counted; sweep over b",
                            model_points(net, test, cfg.bits, cfg.coder, pool))
        models[key] = {"run": run.relative_to(runs_dir).as_posix(), "latent_shape": list(net.latent_shape),
                       "float32_bytes": 4 * int(np.prod(net.latent_shape)), "epochs": run_cfg.train.epochs}
    return curves, models


def _codec_curves(cfg: RDConfig, test: np.ndarray, log: Callable[[str], None],
                  pool: WorkerPool | None = None) -> dict[str, dict]:
    curves = {}
    for codec, settings in (("jpeg", cfg.jpeg), ("webp", cfg.webp), ("jpeg2000", cfg.jpeg2000)):
        if not C.codec_available(codec):
            log(f"rd: warning: this Pillow cannot write {codec}; skipped")
            continue
        log(f"rd: {codec}, settings {list(settings)}")
        fmt, _, options = C.CODECS[codec]
        curves[codec] = curve({"jpeg": "JPEG", "webp": "WebP", "jpeg2000": "JPEG 2000"}[codec],
                              f"Pillow {fmt} {options}, whole file bytes (headers included)",
                              codec_points(codec, settings, test, pool))
    return curves


def run_rd(runs_dir: str | Path, cfg: RDConfig = RDConfig(), device: str | torch.device = "cpu",
           log: Callable[[str], None] = print, force: bool = True, progress: bool | None = None) -> dict[str, Any]:
    """Compute every curve of a finished grid and write ``runs_dir/rd/*.json``; returns the index.

    With ``force=False`` an existing index computed from the same runs and sweep is returned as is.
    ``progress``: bars while the extra latent sizes train (None: as the base run's config says).
    """
    runs_dir = Path(runs_dir)
    summary = load_summary(runs_dir)
    if not summary["runs"]:
        raise UserError(f"{runs_dir}/summary.json lists no finished runs")
    fingerprint = json.loads(json.dumps(_fingerprint(runs_dir, summary, cfg)))  # as it reads back from JSON
    loaded = None if force else load_rd(runs_dir)
    if loaded and loaded[0].get("fingerprint") == fingerprint:
        log(f"rd: {runs_dir / RD_DIR} is up to date")
        return loaded[0]
    started = time.perf_counter()
    base = _base_runs(runs_dir, summary)
    data = run_data(base[0][1])  # the grid's images and its stored split
    train, test = data["train"], data["test"][:cfg.max_images]
    pixels = test.shape[1] * test.shape[2]
    with WorkerPool() as pool:  # the bytes of every image and latent are coded in worker processes
        curves, models = _model_curves(runs_dir, base, cfg, data, test, device, log, progress, pool)
        log(f"rd: PCA, k in {list(cfg.pca_k)}")
        ref_k = _table_pca_k(summary)  # the PCA row of the main tables, quoted at the reference b
        pca = PCA(max(cfg.pca_k + ((ref_k,) if ref_k else ()))).fit(train)
        curves["pca"] = curve("PCA", f"PCA fit on the {len(train)} training images; coefficients quantized and "
                                     f"coded like the latents; Pareto front (by PSNR) over k in {list(cfg.pca_k)} x b "
                                     f"in {list(cfg.bits)}", pca_points(pca, test, cfg.pca_k, cfg.bits, cfg.coder, True, pool))
        pca_ref = pca_points(pca, test, (ref_k,), (REFERENCE_BITS,), cfg.coder, pool=pool)[0] if ref_k else None
        curves.update(_codec_curves(cfg, test, log, pool))
    mean_img = to_float(train).mean(0, keepdim=True).expand(len(test), -1, -1, -1)  # (N, 1, S, S)
    curves["mean"] = curve("mean image", "the mean training image for every test image: 0 bytes per image",
                           [_point("-", np.zeros(1), pixels, all_metrics(mean_img, to_float(test)))])
    for key, c in curves.items():
        write_json(runs_dir / RD_DIR / f"{key}.json", c)
    g = summary.get("grid") or {}
    index = {"dataset": g.get("dataset"), "source": g.get("source"), "preset": preset_of(g).get("name"),
             "grid_device": g.get("device"), "date": dt.date.today().isoformat(),
             "seconds": round(time.perf_counter() - started, 1), "image_size": int(test.shape[1]),
             "raw_bytes": pixels, "n_test": len(test), "n_train": len(train), "coder": cfg.coder,
             "config": asdict(cfg), "models": models, "reference_bits": REFERENCE_BITS, "pca_reference": pca_ref,
             "methods": {k: f"{k}.json" for k in curves}, "fingerprint": fingerprint}
    write_json(runs_dir / RD_DIR / "index.json", index)
    return index
