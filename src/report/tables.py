"""Every Markdown table of the report, from stored results only (summary rows, noise-sweep rows,
sweep rows, claims.json comparisons, rd/*.json curves).

Numbers are formatted by ``fmt`` alone: "mean ± std" over seeds, the bare mean for one seed.
"""
from __future__ import annotations

import math

import numpy as np

from ..results import (AT_MEAN, MEAN_IMAGE, MEAN_IMAGE_DB, MODEL_LABEL, OVERFITTING, REG_LABEL, aggregate,
                       gaussian_condition, levels, run_flags)
from ..stats import METRICS, mean_std
from .style import DIGITS, SWEEP_LABEL

TARGETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # bpp of the matched-rate table (rows only near a curve)


def fmt(metric: str, stats: tuple[float, float, int] | list | None) -> str:
    """mean ± std of (mean, std, n) (the std only when n > 1; always for a bare (mean, std)); "—" for none."""
    if not stats:
        return "—"
    d = DIGITS[metric]
    return f"{stats[0]:.{d}f} ± {stats[1]:.{d}f}" if len(stats) < 3 or stats[2] > 1 else f"{stats[0]:.{d}f}"


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def head(cols: list[str]) -> list[str]:
    """The header and rule lines of a Markdown table."""
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def trained(tr: float, sigma: float) -> str:
    return "clean" if tr == 0 else f"σ={sigma:g}"


# ---------------------------------------------------------------- the grid

DAGGER = " †"  # marks a table row that includes a run which has not converged


def unconverged_cells(runs: list[dict]) -> set[tuple[str, str, float]]:
    """(model, reg, noise_train) of every cell with a run whose convergence flag is not true."""
    return {(r["model"], r["reg"], r["noise_train"]) for r in runs if not (r.get("convergence") or {}).get("converged")}


def convergence_note(runs: list[dict]) -> str:
    """How many runs converged, by which criterion, and what † means; '' for no runs."""
    if not runs:
        return ""
    ok = [r for r in runs if (r.get("convergence") or {}).get("converged")]
    c = next((r["convergence"] for r in runs if {"threshold", "tail_epochs", "epochs"} <= set(r.get("convergence") or {})),
             None)
    rule = (f" (converged: the best validation loss improved by less than {100 * c['threshold']:g}% over the last "
            f"{c['tail_epochs']} of {c['epochs']} epochs)" if c else "")
    if len(ok) == len(runs):
        return (f"**All {len(runs)} runs converged**" if len(runs) > 1 else "**The run converged**") + f"{rule}."
    return (f"**{len(ok)} of {len(runs)} runs converged**{rule}. Rows marked † include a run that had not: their "
            "numbers describe undertrained models, a preview of the pipeline, not findings about the methods.")

def seed_coverage(runs: list[dict], protocol_seeds: list[int], sigma: float) -> str:
    """How many of the protocol's seeds each cell of the grid (model x regularizer x clean / sigma-trained)
    has, e.g. "Seeds per cell (the protocol has 3): AE 8 cells with 1 of 3 seeds; VAE 8 cells with 0 of 3
    seeds."; '' for no runs."""
    if not runs:
        return ""
    n, wanted = len(protocol_seeds), set(protocol_seeds)
    parts = []
    for model, label in MODEL_LABEL.items():
        counts: dict[int, int] = {}
        for reg in REG_LABEL:
            for tr in (0.0, sigma):
                seeds = {r["seed"] for r in runs if (r["model"], r["reg"], r["noise_train"]) == (model, reg, tr)}
                k = len(seeds & wanted)
                counts[k] = counts.get(k, 0) + 1
        parts.append(f"{label} " + ", ".join(f"{c} cell{'s' * (c != 1)} with {k} of {n} seed{'s' * (n != 1)}"
                                             for k, c in sorted(counts.items(), reverse=True)))
    return f"Seeds per cell (the protocol has {n}): " + "; ".join(parts) + "."


def cell_flags(runs: list[dict], baselines: dict | None, keys: list[tuple]) -> list[str]:
    """The ``results.run_flags`` held by the runs of the cells ``keys`` ((model, reg, noise_train)):
    ["overfitting", "at the mean image"], each with "k of n runs" when only some have it."""
    rows = [r for r in runs if (r["model"], r["reg"], r["noise_train"]) in keys]
    out = []
    for flag in (OVERFITTING, AT_MEAN):
        k = sum(flag in run_flags(r, baselines) for r in rows)
        if k:
            out.append(flag if k == len(rows) else f"{flag}: {k} of {len(rows)} runs")
    return out


def row_name(name: str, summary: dict, keys: list[tuple]) -> str:
    """A table row's name with † (a run not converged) and its flags: "Baseline † (at the mean image)"."""
    runs = summary["runs"]
    flags = cell_flags(runs, summary.get("baselines"), keys)
    return name + (DAGGER if set(keys) & unconverged_cells(runs) else "") + (f" ({', '.join(flags)})" if flags else "")


def flagged(summary: dict, model: str, flag: str) -> list[str]:
    """"Baseline", "L1 (noise-trained)", ...: the cells of ``model`` whose runs hold ``flag``."""
    runs, base = summary["runs"], summary.get("baselines")
    out = []
    for tr in sorted({r["noise_train"] for r in runs}):
        for reg in REG_LABEL:
            if any(flag in run_flags(r, base) for r in runs if (r["model"], r["reg"], r["noise_train"]) == (model, reg, tr)):
                out.append(REG_LABEL[reg] + ("" if tr == 0 else " (noise-trained)"))
    return out


def flagged_text(summary: dict, model: str, flag: str) -> str:
    """"every run", or "Baseline and L2 (noise-trained)": ``flagged`` in words; '' for none."""
    where = flagged(summary, model, flag)
    every = len(where) == len({(r["reg"], r["noise_train"]) for r in summary["runs"] if r["model"] == model})
    return ("every run" if every else join_and(where)) if where else ""


def flags_note(summary: dict) -> str:
    """What "at the mean image" and "overfitting" mean, with the runs that are so; '' when none is."""
    runs, base = summary["runs"], summary.get("baselines")
    parts = []
    where = {m: flagged_text(summary, m, AT_MEAN) for m in MODEL_LABEL}
    if any(where.values()):
        ref = base["test"][MEAN_IMAGE]
        parts.append(f"Rows marked **{AT_MEAN}** ({'; '.join(f'{MODEL_LABEL[m]}: {w}' for m, w in where.items() if w)}) "
                     f"come from models whose clean test PSNR is within {MEAN_IMAGE_DB:g} dB of sending the mean "
                     f"training image ({ref['psnr']:.2f} dB), or whose SSIM is below its {ref['ssim']:.4f}: they return "
                     "about the same face for every input, so their numbers say nothing about their regularizer, "
                     "and no claim is decided from them.")
    over = [f"{r['run']}: {r['convergence']['why']}" for r in runs if OVERFITTING in run_flags(r, base)]
    if over:
        parts.append(f"Rows marked **{OVERFITTING}** converged after an early best epoch, and their validation loss "
                     "rose since: the reported weights are the early-stopped best ones (" + "; ".join(over) + ").")
    return "\n\n".join(parts)


def figure_caption(summary: dict, model: str) -> str:
    """The line under (and in the title of) a model's image figures that names its runs at the mean image."""
    where = flagged_text(summary, model, AT_MEAN)
    return f"{MODEL_LABEL[model]} {AT_MEAN} (about the same face for every input): {where}" if where else ""


def main_table(summary: dict, model: str) -> str:
    """The original study's layout: clean-trained models, clean inputs, val and test."""
    runs = summary["runs"]
    cols = [(m, s) for m in ("mse", "psnr", "ssim") for s in ("val", "test")]
    lines = head(["Regularization"] + [f"{m.upper()} ({'Validation' if s == 'val' else 'Test'})" for m, s in cols])
    agg = {(m, s): aggregate(runs, s, "clean", m) for m, s in cols}
    for reg in REG_LABEL:
        key = (model, reg, 0.0)
        if key in agg[cols[0]]:
            name = row_name(REG_LABEL[reg], summary, [key])
            lines.append("| " + " | ".join([name] + [fmt(m, agg[(m, s)][key]) for m, s in cols]) + " |")
    base = summary.get("baselines") or {}
    for row in (base.get("test") or {}):
        cells = []
        for m, s in cols:
            v = base.get(s, {}).get(row)
            cells.append(fmt(m, (v[m], 0.0, 1)) if v else "—")
        lines.append(f"| *{row} (reference)* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise_table(summary: dict, sigma: float) -> str:
    """Test PSNR / SSIM: clean- vs noise-trained models on clean vs noisy inputs."""
    runs, noisy = summary["runs"], gaussian_condition(sigma)
    lines = head(["Model", "Regularization"] + [f"{metric} {tr}-trained, {inp} input"
                                                 for metric in ("PSNR", "SSIM")
                                                 for tr in ("clean", "noise") for inp in ("clean", "noisy")])
    aggs = {(m, c): aggregate(runs, "test", c, m) for m in ("psnr", "ssim") for c in ("clean", noisy)}
    for model in ("ae", "vae"):
        for reg in REG_LABEL:
            cells = [fmt(metric, aggs[(metric, cond)].get((model, reg, tr)))
                     for metric in ("psnr", "ssim") for tr in (0.0, sigma) for cond in ("clean", noisy)]
            if any(c != "—" for c in cells):
                name = row_name(REG_LABEL[reg], summary, [(model, reg, 0.0), (model, reg, sigma)])
                lines.append(f"| {MODEL_LABEL[model]} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the analysis

def noise_sweep_table(rows: list[dict], sigma: float, metric: str = "psnr") -> str:
    conds = [c for _, c in levels(rows, "gaussian")] + [c for lv, c in levels(rows, "s&p") if lv > 0]
    lines = head(["Model", "Regularization", "trained"]
                 + [c.replace("gaussian_", "σ=").replace("s&p_", "s&p p=") for c in conds])
    aggs = [aggregate(rows, "test", c, metric) for c in conds]
    for model in ("ae", "vae"):
        for reg in REG_LABEL:
            for tr in (0.0, sigma):
                cells = [fmt(metric, a.get((model, reg, tr))) for a in aggs]
                if any(c != "—" for c in cells):
                    lines.append(f"| {MODEL_LABEL[model]} | {REG_LABEL[reg]} | {trained(tr, sigma)} | "
                                 + " | ".join(cells) + " |")
    return "\n".join(lines)


def plural(n: int, word: str) -> str:
    """"1 regularizer", "4 regularizers", "0 regularizers"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def join_and(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _where(comps: list[dict], lvls: list[float], direction: int, n: int) -> str:
    """"σ=0.2 (3 of 4 regularizers) and σ=0.3 (4 of 4 regularizers)": where regularizers differ in ``direction``."""
    counts = [sum(1 for c in comps if c["level"] == lv and c["direction"] == direction) for lv in lvls]
    return join_and([f"σ={lv:g} ({k} of {plural(n, 'regularizer')})" for lv, k in zip(lvls, counts)])


def denoising_sentence(label: str, comps: list[dict]) -> str:
    """One line per model and metric; grammatical whether denoising training helped nowhere, once or often."""
    helps = sorted({c["level"] for c in comps if c["direction"] > 0})
    costs = sorted({c["level"] for c in comps if c["direction"] < 0})
    n = len({c["reg"] for c in comps})
    if not helps and not costs:
        return (f"- **{label}**: no significant difference between noise- and clean-trained models at any tested "
                f"σ ({plural(n, 'regularizer')}).")
    parts = ([f"significant gains at {_where(comps, helps, 1, n)}"] if helps else []) + \
            ([f"significant losses at {_where(comps, costs, -1, n)}"] if costs else [])
    return f"- **{label}**: denoising training gives " + "; ".join(parts) + "."


def denoising_markdown(comparisons: list[dict]) -> str:
    """PSNR difference noise-trained − clean-trained per test level (claims.json "denoising"), then a summary."""
    comps = [c for c in comparisons if c["metric"] == "psnr"]
    lvls = sorted({c["level"] for c in comps})
    lines = head(["Model", "Regularization"] + [f"σ={lv:g}" for lv in lvls])
    for model in ("ae", "vae"):
        for reg in REG_LABEL:
            cs = {c["level"]: c for c in comps if c["model"] == model and c["reg"] == reg}
            if cs:
                cells = ["—" if lv not in cs else (f"**{cs[lv]['diff']:+.2f}**" if cs[lv]["significant"]
                                                   else f"{cs[lv]['diff']:+.2f}") for lv in lvls]
                lines.append(f"| {MODEL_LABEL[model]} | {REG_LABEL[reg]} | " + " | ".join(cells) + " |")
    summary = []
    for model in ("ae", "vae"):
        for metric in METRICS:
            cs = [c for c in comparisons if c["model"] == model and c["metric"] == metric]
            if not cs:
                continue
            summary.append(denoising_sentence(f"{MODEL_LABEL[model]}, {metric.upper()}", cs))
    return "\n".join(lines) + "\n\n" + "\n".join(summary)


def sampled_z_table(comps: list[dict]) -> str:
    """VAE test PSNR / SSIM decoded from mu vs from a sampled z (claims.json "sampled_z"); '' if none."""
    if not comps:
        return ""
    lines = head(["Regularization", "PSNR from μ", "PSNR from sampled z", "SSIM from μ", "SSIM from sampled z",
                  "p (Holm), PSNR / SSIM"])
    for reg in REG_LABEL:
        cs = {c["metric"]: c for c in comps if c["reg"] == reg}
        if cs:
            p, s = cs["psnr"], cs["ssim"]
            lines.append(f"| {REG_LABEL[reg]} | {fmt('psnr', p['mean_a'])} | {fmt('psnr', p['mean_b'])} | "
                         f"{fmt('ssim', s['mean_a'])} | {fmt('ssim', s['mean_b'])} | "
                         f"{fmt_p(p['p_holm'])} / {fmt_p(s['p_holm'])} |")
    n = len({c["reg"] for c in comps})
    counts = {m: [sum(1 for c in comps if c["metric"] == m and c["direction"] == d) for d in (1, -1)] for m in METRICS}
    lines += ["", sampled_z_sentence(counts, n)]
    return "\n".join(lines)


def sampled_z_sentence(counts: dict[str, list[int]], n: int) -> str:
    """``counts`` = {metric: [better from mu, worse from mu]} over ``n`` regularizers."""
    parts = []
    for m, (better, worse) in counts.items():
        if not better and not worse:
            parts.append(f"{m.upper()}: no significant difference for any of the {plural(n, 'regularizer')}")
        else:
            parts.append(f"{m.upper()}: decoding μ is significantly better for {better} and worse for {worse} "
                         f"of the {plural(n, 'regularizer')}")
    return "Decoding μ vs a sampled z, " + "; ".join(parts) + "."


def sweeps_markdown(rows: list[dict]) -> str:
    """One row per sweep value (mean ± std over seeds); † marks a row with a run that has not converged."""
    lines = head(["Sweep", "Model", "Value", "seeds (converged)", "PSNR val", "PSNR test", "SSIM test",
                  "penalty / recon. loss"])
    keys = sorted({(r["sweep"], r["model"], r["value"]) for r in rows},
                  key=lambda k: (list(SWEEP_LABEL).index(k[0]), k[1], k[2]))
    for s, model, v in keys:
        pts = [r for r in rows if (r["sweep"], r["model"], r["value"]) == (s, model, v)]
        cells = [fmt(m, mean_std([r["metrics"][split]["clean"][m] for r in pts]))
                 for split, m in (("val", "psnr"), ("test", "psnr"), ("test", "ssim"))]
        share = f"{np.mean([r['penalty_share'] for r in pts]):.2g}" if s in ("l1", "l2") else "—"
        ok = sum(bool((r["metrics"].get("convergence") or {}).get("converged")) for r in pts)
        lines.append(f"| {SWEEP_LABEL[s]} | {MODEL_LABEL[model]} | {v:g}{DAGGER if ok < len(pts) else ''} | "
                     f"{len(pts)} ({ok}) | " + " | ".join(cells) + f" | {share} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- rate-distortion

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
    dist = [(abs(math.log(b / target)), i) for i, b in enumerate(c["results"]["bpp"]) if b > 0]
    best = min(dist) if dist else None
    return best[1] if best and best[0] <= math.log(within) else None


def matched_rate_table(index: dict, curves: dict[str, dict]) -> str:
    raw = index["raw_bytes"]
    lines = head(["Target bpp", "Method", "Setting", "bpp", "Bytes/image", "Ratio", "PSNR", "SSIM",
                  "PSNR at target", "SSIM at target"])
    for t in TARGETS:
        for key, c in curves.items():
            i = None if key == "mean" else nearest(c, t)
            if i is None:
                continue
            r = c["results"]
            ip, iss = interpolate(c, t, "psnr"), interpolate(c, t, "ssim")
            lines.append(f"| {t:g} | {c['name']} | {r['setting'][i]} | {r['bpp'][i]:.3f} | {r['bytes'][i]:,.0f} | "
                         f"{raw / r['bytes'][i]:.0f}:1 | {r['psnr'][i]:.2f} | {r['ssim'][i]:.4f} | "
                         + (f"{ip:.2f} | {iss:.4f} |" if ip is not None else "— | — |"))
    return "\n".join(lines)


def bytes_notes(rd: tuple[dict, dict[str, dict]] | None) -> dict[str, str]:
    """{model: one Markdown line}: bytes per image of the models and references in the main tables
    (``rd`` = ``results.load_rd``; {} without one)."""
    if rd is None:
        return {}
    index, curves = rd
    raw, b = index["raw_bytes"], index["reference_bits"]
    ref = index.get("pca_reference")
    notes = {}
    for m, label in MODEL_LABEL.items():
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
