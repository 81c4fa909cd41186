"""Rate–distortion study: every method on the same test images, counted in real bytes.

``run_rd(runs_dir)`` reads a finished grid and writes ``runs_dir/rd/``::

    index.json           dataset, preset, test images, coder, date, the list of method files
    <method>.json        one curve per method, CompressAI's shape:
                         {"name", "description", "results": {"bpp", "psnr", "ssim", ...}}

Methods: the AE and the VAE of the grid (clean-trained, no regularization, lowest seed)
with their latents quantized to b bits and entropy-coded (``compression.encode_latent``);
optional extra AE / VAE latent sizes trained here; PCA (fit on train) through the same
quantize-and-code path, keeping the Pareto front over (k, b); JPEG, WebP and JPEG 2000
through Pillow; the mean image (0 bytes per image). Every point is the mean over test
images of per-image bytes, PSNR and SSIM, and every image's bytes are decoded back before
it is scored.

The report reads only these JSON files: ``rd_figures`` draws ``rd_psnr.png`` /
``rd_ssim.png`` and ``rd_markdown`` writes the README subsection.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from . import compression as C
from .data import load_images, split_indices, to_float
from .metrics import all_metrics, psnr, ssim
from .evaluation import EVAL_BATCH, load_run
from .train import RunConfig, fit, is_trained
from .utils import UserError, read_json, write_json

RD_DIR = "rd"
FIGURE_NAMES = ("rd_psnr.png", "rd_ssim.png")
REFERENCE_BITS = 8  # the b at which the main tables quote coded bytes per image
TARGETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # bpp of the matched-rate table (rows only near a curve)


@dataclass(frozen=True)
class RDConfig:
    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 16)            # latent bits per value (AE, VAE, PCA)
    pca_k: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 200, 400, 800)   # PCA components (capped by the train size)
    jpeg: tuple[int, ...] = (1, 5, 10, 20, 30, 50, 70, 90)            # JPEG quality
    webp: tuple[int, ...] = (0, 5, 10, 20, 40, 60, 80, 95)            # WebP quality
    jpeg2000: tuple[float, ...] = (160, 100, 64, 40, 25, 16, 10, 6, 4)  # JPEG 2000 compression ratio
    coder: str = "auto"                     # latent coder: packed, zlib, lzma or auto (shortest)
    ae_latents: tuple[int, ...] = ()        # extra AE bottleneck channel counts, trained here
    vae_latents: tuple[int, ...] = ()       # extra VAE latent sizes, trained here
    max_images: int | None = None           # test images used (first N of the test split; None = all)


RD_PRESETS = {
    "smoke": RDConfig(bits=(4, 8), pca_k=(4, 8), jpeg=(20, 80), webp=(20, 80), jpeg2000=(16, 4)),
    "quick": RDConfig(vae_latents=(32,), ae_latents=(1,)),
    "full": RDConfig(vae_latents=(16, 32, 64, 128, 512), ae_latents=(1, 2, 8), max_images=2000),
}


# ---------------------------------------------------------------- points

def _point(setting: str, n_bytes: np.ndarray, pixels: int, metrics: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Means over images: bytes, bpp, PSNR, SSIM (per-image values first, as everywhere)."""
    return {"setting": setting, "bytes": float(np.mean(n_bytes)), "bpp": C.bpp(float(np.mean(n_bytes)), pixels),
            "psnr": float(metrics["psnr"].mean()), "ssim": float(metrics["ssim"].mean())}


def _code_latents(latents: np.ndarray, bits: int, coder: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, ...) latents -> decoded (N, ...) float32 latents and the (N,) byte counts."""
    blobs = [C.encode_latent(z, bits, coder) for z in latents]
    decoded = np.stack([C.decode_latent(b, latents.shape[1:], bits) for b in blobs])
    return decoded, np.array([len(b) for b in blobs])


@torch.no_grad()
def model_points(model: torch.nn.Module, images_u8: np.ndarray, bits: tuple[int, ...],
                 coder: str = "auto") -> list[dict[str, Any]]:
    """AE (feature map z) or VAE (posterior mean mu): quantize, code, decode, score, per b."""
    model.eval()
    device = next(model.parameters()).device
    pixels = images_u8.shape[1] * images_u8.shape[2]
    chunks = [images_u8[i:i + EVAL_BATCH] for i in range(0, len(images_u8), EVAL_BATCH)]
    xs = [to_float(c).to(device) for c in chunks]
    latents = []
    for x in xs:
        z = model.encode(x)
        latents.append((z[0] if isinstance(z, tuple) else z).cpu().numpy())  # VAE: (mu, logvar) -> mu
    points = []
    for b in bits:
        parts: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
        n_bytes = []
        for x, z in zip(xs, latents):
            z_hat, nb = _code_latents(z, b, coder)
            x_hat = model.decode(torch.from_numpy(z_hat).to(device))
            m = all_metrics(x_hat, x)
            parts["psnr"].append(m["psnr"].cpu())
            parts["ssim"].append(m["ssim"].cpu())
            n_bytes.append(nb)
        points.append(_point(f"b={b}", np.concatenate(n_bytes), pixels, {k: torch.cat(v) for k, v in parts.items()}))
    return points


def pca_points(pca: C.PCA, test_u8: np.ndarray, ks: tuple[int, ...], bits: tuple[int, ...],
               coder: str = "auto", front_only: bool = False) -> list[dict[str, Any]]:
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
            z_hat, nb = _code_latents(np.ascontiguousarray(codes_all[:, :k]), b, coder)
            x_hat = pca.truncate(k).decode(torch.from_numpy(z_hat))
            candidates.append({"setting": f"k={k}, b={b}", "bytes": float(np.mean(nb)),
                               "bpp": C.bpp(float(np.mean(nb)), pixels), "psnr": float(psnr(x_hat, x).mean()),
                               "x_hat": x_hat})
    points = pareto(candidates) if front_only else candidates
    for p in points:
        p["ssim"] = float(ssim(p.pop("x_hat"), x).mean())
    return points


def codec_points(codec: str, settings: tuple[float, ...], test_u8: np.ndarray) -> list[dict[str, Any]]:
    """One point per codec setting; bytes are the encoded buffers' lengths."""
    pixels = test_u8.shape[1] * test_u8.shape[2]
    x = to_float(test_u8)
    label = "rate" if codec == "jpeg2000" else "q"
    points = []
    for s in settings:
        blobs = [C.codec_encode(img, codec, s) for img in test_u8]
        decoded = np.stack([C.codec_decode(b) for b in blobs])
        points.append(_point(f"{label}={s:g}", np.array([len(b) for b in blobs]), pixels,
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

def _grid_data(runs_dir: Path, summary: dict) -> dict[str, np.ndarray]:
    """{"all", "train", "val", "test"}: (N, S, S) uint8 images of the grid's dataset and split (stored config)."""
    cfg = RunConfig.from_dict(read_json(runs_dir / summary["runs"][0]["run"] / "config.json"))
    d = cfg.data
    faces = load_images(d.root, d.image_size, limit=d.limit, cache_dir=d.cache_dir, progress=False)
    split = split_indices(len(faces.images), d.split, d.split_seed)
    return {"all": faces.images, **{k: np.asarray(faces.images[v]) for k, v in split.items()}}


def _variant(runs_dir: Path, base: RunConfig, model: str, latent: int, images: np.ndarray,
             log: Callable[[str], None]) -> Path:
    """Train (or resume, or reuse) the clean, unregularized ``model`` with another latent size."""
    key = "ae_latent" if model == "ae" else "vae_latent"
    cfg = replace(base, model=replace(base.model, **{key: latent}))
    out = runs_dir / RD_DIR / "models" / f"{model}-latent{latent}"
    if not is_trained(out, cfg.train.epochs):
        log(f"rd: training {model} with latent {latent} ({cfg.train.epochs} epochs) in {out}")
        fit(cfg, images, out, resume=True, log=log)
    return out


def _table_pca_k(summary: dict) -> int | None:
    rows = ((summary.get("baselines") or {}).get("test") or {})
    return next((int(r.split("-")[1]) for r in rows if r.startswith("PCA-")), None)


def _latent_shape(model: torch.nn.Module) -> tuple[int, ...]:
    return tuple(model.latent_shape) if hasattr(model, "latent_shape") else (model.latent_dim,)


def _fingerprint(runs_dir: Path, summary: dict, cfg: RDConfig) -> dict[str, Any]:
    """What the curves depend on: the sweep and each grid run's best weights (name, size, mtime)."""
    best = {r["run"]: runs_dir / r["run"] / "best.pt" for r in summary["runs"]}
    return {"config": asdict(cfg), "runs": {k: [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None
                                            for k, p in sorted(best.items())}}


def _model_curves(runs_dir: Path, summary: dict, cfg: RDConfig, data: dict[str, np.ndarray], test: np.ndarray,
                  device: str | torch.device, log: Callable[[str], None]) -> tuple[dict[str, dict], dict[str, dict]]:
    """b sweeps of the grid's clean, unregularized AE and VAE (lowest seed) and of the extra latent sizes."""
    cells = {(r["model"], r["reg"], r["noise_train"]): r["run"] for r in summary["runs"]
             if r["seed"] == min(x["seed"] for x in summary["runs"])}
    runs = [(m, runs_dir / cells[(m, "none", 0.0)], None) for m in ("ae", "vae") if (m, "none", 0.0) in cells]
    if not runs:
        raise UserError(f"{runs_dir} has no finished clean-trained, unregularized run; run the grid first")
    for m, run, _ in list(runs):
        run_cfg = RunConfig.from_dict(read_json(run / "config.json"))
        for latent in (cfg.ae_latents if m == "ae" else cfg.vae_latents):
            runs.append((m, _variant(runs_dir, run_cfg, m, latent, data["all"], log), latent))
    curves, models = {}, {}
    for m, run, latent in runs:
        net, run_cfg = load_run(run, device)
        shape = "x".join(map(str, _latent_shape(net)))
        key, label = (m, m.upper()) if latent is None else (f"{m}-latent{latent}", f"{m.upper()} (latent {shape})")
        what = {"ae": "feature map z", "vae": "posterior mean mu"}[m]
        log(f"rd: {key} ({shape} latent), b in {list(cfg.bits)}")
        curves[key] = curve(label, f"{m.upper()} {run.name}: {what} ({shape}) quantized per image to b bits, "
                                   f"{cfg.coder} coder, 9-byte header counted; sweep over b",
                            model_points(net, test, cfg.bits, cfg.coder))
        models[key] = {"run": run.relative_to(runs_dir).as_posix(), "latent_shape": list(_latent_shape(net)),
                       "float32_bytes": 4 * int(np.prod(_latent_shape(net))), "epochs": run_cfg.train.epochs}
    return curves, models


def _codec_curves(cfg: RDConfig, test: np.ndarray, log: Callable[[str], None]) -> dict[str, dict]:
    curves = {}
    for codec, settings in (("jpeg", cfg.jpeg), ("webp", cfg.webp), ("jpeg2000", cfg.jpeg2000)):
        if not C.codec_available(codec):
            log(f"rd: warning: this Pillow cannot write {codec}; skipped")
            continue
        log(f"rd: {codec}, settings {list(settings)}")
        fmt, _, options = C.CODECS[codec]
        curves[codec] = curve({"jpeg": "JPEG", "webp": "WebP", "jpeg2000": "JPEG 2000"}[codec],
                              f"Pillow {fmt} {options}, whole file bytes (headers included)",
                              codec_points(codec, settings, test))
    return curves


def run_rd(runs_dir: str | Path, cfg: RDConfig = RDConfig(), device: str | torch.device = "cpu",
           log: Callable[[str], None] = print, force: bool = True) -> dict[str, Any]:
    """Compute every curve of a finished grid and write ``runs_dir/rd/*.json``; returns the index.

    With ``force=False`` an existing index computed from the same runs and sweep is returned as is.
    """
    from .report import load_summary

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
    data = _grid_data(runs_dir, summary)
    train, test = data["train"], data["test"][:cfg.max_images]
    pixels = test.shape[1] * test.shape[2]
    curves, models = _model_curves(runs_dir, summary, cfg, data, test, device, log)

    log(f"rd: PCA, k in {list(cfg.pca_k)}")
    ref_k = _table_pca_k(summary)  # the PCA row of the main tables, quoted at the reference b
    pca = C.PCA(max(cfg.pca_k + ((ref_k,) if ref_k else ()))).fit(train)
    curves["pca"] = curve("PCA", f"PCA fit on the {len(train)} training images; coefficients quantized and coded "
                                 f"like the latents; Pareto front (by PSNR) over k in {list(cfg.pca_k)} x b in "
                                 f"{list(cfg.bits)}", pca_points(pca, test, cfg.pca_k, cfg.bits, cfg.coder, True))
    pca_ref = pca_points(pca, test, (ref_k,), (REFERENCE_BITS,), cfg.coder)[0] if ref_k else None

    curves.update(_codec_curves(cfg, test, log))
    mean_img = to_float(train).mean(0, keepdim=True).expand(len(test), -1, -1, -1)  # (N, 1, S, S)
    curves["mean"] = curve("mean image", "the mean training image for every test image: 0 bytes per image",
                           [_point("-", np.zeros(1), pixels, all_metrics(mean_img, to_float(test)))])
    for key, c in curves.items():
        write_json(runs_dir / RD_DIR / f"{key}.json", c)
    g = summary.get("grid") or {}
    index = {"dataset": g.get("dataset"), "source": g.get("source"), "preset": (g.get("preset") or {}).get("name"),
             "grid_device": g.get("device"), "date": dt.date.today().isoformat(),
             "seconds": round(time.perf_counter() - started, 1), "image_size": int(test.shape[1]),
             "raw_bytes": pixels, "n_test": len(test), "n_train": len(train), "coder": cfg.coder,
             "config": asdict(cfg), "models": models, "reference_bits": REFERENCE_BITS, "pca_reference": pca_ref,
             "methods": {k: f"{k}.json" for k in curves}, "fingerprint": fingerprint}
    write_json(runs_dir / RD_DIR / "index.json", index)
    return index


# ---------------------------------------------------------------- figures and tables (from the JSON only)

STYLE = {"ae": ("C0", "o"), "vae": ("C1", "s"), "pca": ("C2", "^"), "jpeg": ("C3", "v"),
         "webp": ("C4", "D"), "jpeg2000": ("C5", "P")}


def load_rd(runs_dir: str | Path) -> tuple[dict, dict[str, dict]] | None:
    """(index, {method key: curve}) from ``runs_dir/rd``, or None when there is none."""
    rd = Path(runs_dir) / RD_DIR
    if not (rd / "index.json").exists():
        return None
    index = read_json(rd / "index.json")
    return index, {k: read_json(rd / f) for k, f in index["methods"].items()}


def rd_figures(runs_dir: str | Path, figures: str | Path) -> list[Path]:
    """``rd_psnr.png`` and ``rd_ssim.png``: every method in one figure each (log bpp axis)."""
    from .report import _save

    loaded = load_rd(runs_dir)
    if loaded is None:
        return []
    index, curves = loaded
    written = []
    for metric, name in zip(("psnr", "ssim"), FIGURE_NAMES):
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.subplots()
        for key, c in curves.items():
            r = c["results"]
            if key == "mean":
                ax.axhline(r[metric][0], color="0.4", ls=":", label=f"{c['name']} (0 B)")
                continue
            color, marker = STYLE.get(key, ("0.5", "."))
            variant = key not in STYLE
            if variant:
                color = STYLE[key.split("-")[0]][0]
            ax.plot(r["bpp"], r[metric], marker=marker, ms=3 if variant else 4, color=color,
                    ls="--" if variant else "-", lw=0.9 if variant else 1.5, alpha=0.7 if variant else 1,
                    label=c["name"])
        ax.set_xscale("log")
        ax.set(xlabel="bits per pixel (real bytes × 8 / pixels)", ylabel="PSNR (dB)" if metric == "psnr" else "SSIM",
               title=f"{metric.upper()} vs rate: {index['dataset']}, preset {index['preset']}, "
                     f"{index['n_test']} test images")
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, Path(figures) / name))
    return written


def interpolate(c: dict, target: float, metric: str) -> float | None:
    """Metric at ``target`` bpp, linear in log(bpp) between the two measured points around it."""
    bpp, val = c["results"]["bpp"], c["results"][metric]
    pts = sorted((b, v) for b, v in zip(bpp, val) if b > 0)
    for (b0, v0), (b1, v1) in zip(pts, pts[1:]):
        if b0 <= target <= b1:
            t = 0.0 if b1 == b0 else (math.log(target) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return v0 + t * (v1 - v0)
    return None


def nearest(c: dict, target: float, within: float = 1.5) -> int | None:
    """Index of the measured point nearest ``target`` in log(bpp), if within a factor ``within``."""
    r = c["results"]
    best = min((abs(math.log(b / target)), i) for i, b in enumerate(r["bpp"]) if b > 0) if any(
        b > 0 for b in r["bpp"]) else None
    return best[1] if best and best[0] <= math.log(within) else None


def matched_rate_table(index: dict, curves: dict[str, dict]) -> str:
    raw = index["raw_bytes"]
    head = ["Target bpp", "Method", "Setting", "bpp", "Bytes/image", "Ratio", "PSNR", "SSIM",
            "PSNR at target", "SSIM at target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in TARGETS:
        for key, c in curves.items():
            if key == "mean":
                continue
            i = nearest(c, t)
            if i is None:
                continue
            r = c["results"]
            ip, iss = interpolate(c, t, "psnr"), interpolate(c, t, "ssim")
            lines.append(f"| {t:g} | {c['name']} | {r['setting'][i]} | {r['bpp'][i]:.3f} | {r['bytes'][i]:,.0f} | "
                         f"{raw / r['bytes'][i]:.0f}:1 | {r['psnr'][i]:.2f} | {r['ssim'][i]:.4f} | "
                         + (f"{ip:.2f} | {iss:.4f} |" if ip is not None else "— | — |"))
    return "\n".join(lines)


def verdicts(index: dict, curves: dict[str, dict]) -> list[str]:
    """Plain sentences from the interpolated values: the ranking at each target rate, then where
    each AE / VAE curve wins or loses against the other methods at equal bytes."""
    table = {}  # target -> {method name: (psnr, ssim)} for the methods whose curve reaches it
    for t in TARGETS:
        vals = {c["name"]: (interpolate(c, t, "psnr"), interpolate(c, t, "ssim"))
                for k, c in curves.items() if k != "mean"}
        if "mean" in curves:  # 0 bytes fit every budget
            m = curves["mean"]
            vals[m["name"]] = (m["results"]["psnr"][0], m["results"]["ssim"][0])
        table[t] = {n: v for n, v in vals.items() if v[0] is not None}
    out = []
    for t, vals in table.items():
        if len(vals) < 3:
            continue
        order = sorted(vals, key=lambda n: -vals[n][0])
        by_ssim = max(vals, key=lambda n: vals[n][1])
        out.append(f"- at **{t:g} bpp** ({raw_bytes(index, t):,.0f} B/image), PSNR: "
                   + " > ".join(f"{n} {vals[n][0]:.1f} dB" for n in order)
                   + f"; best SSIM: {by_ssim} ({vals[by_ssim][1]:.3f}).")
    for key, c in curves.items():
        if key.split("-")[0] not in ("ae", "vae"):
            continue
        name, parts, ranks = c["name"], [], []
        for t, vals in table.items():
            if name not in vals:
                continue
            mine = vals[name]
            beats = [n for n in vals if n != name and vals[n][0] < mine[0]]
            loses = [n for n in vals if n != name and vals[n][0] > mine[0]]
            parts.append(f"at {t:g} bpp it beats {', '.join(beats) or 'none of them'} and loses to "
                         f"{', '.join(loses) or 'none'}")
            ranks.append(f"{1 + sum(v[1] > mine[1] for v in vals.values())}/{len(vals)} at {t:g} bpp")
        r = c["results"]
        top = max(range(len(r["psnr"])), key=r["psnr"].__getitem__)
        out.append(f"- **{name}** (PSNR at equal bytes): " + ("; ".join(parts) if parts else
                   "its curve reaches none of the target rates")
                   + (f". By SSIM it ranks {', '.join(ranks)}" if ranks else "")
                   + f". Its best point is {r['psnr'][top]:.2f} dB at {r['bpp'][top]:.3f} bpp ({r['setting'][top]}).")
    if "mean" in curves:
        r = curves["mean"]["results"]
        out.append(f"- The mean image (0 B, in every ranking above) scores {r['psnr'][0]:.2f} dB / SSIM "
                   f"{r['ssim'][0]:.3f}: a method below it does worse than sending nothing.")
    return out


def raw_bytes(index: dict, bpp_value: float) -> float:
    return bpp_value * index["raw_bytes"] / 8


def rd_markdown(runs_dir: str | Path, figures_rel: str) -> str:
    """The README's rate–distortion subsection ('' when ``runs_dir/rd`` does not exist)."""
    loaded = load_rd(runs_dir)
    if loaded is None:
        return ""
    index, curves = loaded
    cfg = index["config"]
    s = index["image_size"]
    real = index.get("source") == "real"
    variants = [c["name"] for k, c in curves.items() if "-latent" in k]
    lines = [
        "", f"#### Rate–distortion: real bytes per image ({index['dataset']}, preset `{index['preset']}`)", "",
        f"*`python -m src rd` on {index['date']}: {index['n_test']} test images ({s}×{s}, raw {index['raw_bytes']:,}"
        f" B at 8 bits/pixel); PCA and the mean image fit on the {index['n_train']} training images."
        + ("" if real else " Synthetic faces, not Flickr-Faces.") + "*", "",
        f"Rate is bits per pixel = 8 × bytes / {index['raw_bytes']:,}, from the real length of each image's byte "
        f"string, decoded back before scoring. AE, VAE and PCA: the latent (AE feature map, VAE μ, PCA "
        f"coefficients) is quantized uniformly to b bits with a per-image offset and step (two float32 in a "
        f"9-byte header, counted), then coded losslessly ({index['coder']}: the shortest of fixed-length packing,"
        f" raw deflate and raw LZMA2); b ∈ {cfg['bits']}. PCA keeps the Pareto front over k ∈ {cfg['pca_k']} "
        f"× b. JPEG / WebP / JPEG 2000: Pillow, whole file bytes with headers (JPEG quality {cfg['jpeg']}, WebP "
        f"quality {cfg['webp']}, JPEG 2000 compression ratio {cfg['jpeg2000']}). AE and VAE are the grid's "
        f"clean-trained, unregularized models"
        + (f"; dashed: extra latent sizes trained by `rd` with the same settings ({', '.join(variants)})."
           if variants else "."), "",
        f"![PSNR vs bpp]({figures_rel}/{FIGURE_NAMES[0]})", f"![SSIM vs bpp]({figures_rel}/{FIGURE_NAMES[1]})", "",
        ("Each method's measured point nearest the target rate (shown only within a factor 1.5 of it), and its "
         "PSNR / SSIM *interpolated* at the target (linear in log bpp between the two measured points around it; "
         "— where the curve does not reach the target). Ratio = raw bytes / coded bytes."), "",
        matched_rate_table(index, curves), "",
        "At equal bytes (interpolated):", "", *verdicts(index, curves), "",
        "JSON per method (CompressAI's format): `rd/*.json` in the run folder.", "",
    ]
    return "\n".join(lines)


def bytes_notes(runs_dir: str | Path) -> dict[str, str]:
    """{model: one Markdown line}: bytes per image of the models and references in the main tables."""
    loaded = load_rd(runs_dir)
    if loaded is None:
        return {}
    index, curves = loaded
    raw, b = index["raw_bytes"], index["reference_bits"]
    ref = index.get("pca_reference")
    notes = {}
    for m, label in (("ae", "AE"), ("vae", "VAE")):
        info, c = index["models"].get(m), curves.get(m)
        if not info or not c:
            continue
        r = c["results"]
        text = (f"*Bytes per image: raw image {raw:,} B (8 bits/pixel); {label} latent "
                f"{'×'.join(map(str, info['latent_shape']))} as float32, as the rows above use it: "
                f"{info['float32_bytes']:,} B")
        if f"b={b}" in r["setting"]:
            i = r["setting"].index(f"b={b}")
            text += f", quantized to {b} bits and coded: {r['bytes'][i]:,.0f} B (PSNR {r['psnr'][i]:.2f} dB)"
        if ref:
            k = int(ref["setting"].split(",")[0].split("=")[1])
            text += (f"; PCA-{k}: {4 * k:,} B as float32, coded at {b} bits: {ref['bytes']:,.0f} B "
                     f"(PSNR {ref['psnr']:.2f} dB)")
        notes[m] = text + "; mean image: 0 B. Rate–distortion curves below.*"
    return notes
