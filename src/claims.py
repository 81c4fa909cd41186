"""Verdicts on the original study's four claims, and the paired tables of the analysis report.

``check_claims(OUT)`` reads the per-image arrays of a grid (``per_image.npz``, and
``noise_sweep.npz`` once ``sweeps.noise_sweep`` ran) and writes ``OUT/claims.json``::

    {"test", "alpha", "split", "noise_sigma", "seeds", "runs_dir",
     "claims": {key: {"claim", "definition", "verdict", "tally", "cells": [...]}},
     "denoising": [comparison, ...],   noise-trained vs clean-trained per Gaussian level
     "sampled_z": [comparison, ...]}   the VAE decoded from mu vs from a sampled z

Each comparison is ``stats.paired`` of two cells plus who is compared on what; each claim and
each table is one family of ``stats.decide`` (Holm). A claim that uses a run unfit for a verdict
gets none: "inconclusive", with why: "runs not converged" (its ``convergence`` flag is false) or
"runs at the mean image" (``results.run_flags``: it returns about the same face for every input).
The report only reads this file.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .results import (AT_MEAN, CLAIMS_JSON, MODEL_LABEL, REG_LABEL, Store, cell, gaussian_condition, levels,
                      load_summary, noise_runs, noise_sigma, run_flags)
from .stats import ALPHA, METRICS, TEST_NAME, decide, paired
from .utils import write_json

CONFIRMED, REFUTED, INCONCLUSIVE = "confirmed", "refuted", "inconclusive"
REGS = tuple(REG_LABEL)  # regularization.KINDS, without importing torch


def _values(store: Store, runs: dict[int, str], metric: str, cond: str, drop_from: str | None = None,
            split: str = "test") -> dict[int, np.ndarray]:
    """{seed: per-image metric}; with ``drop_from``, the change cond - drop_from (e.g. noisy - clean)."""
    out = {}
    for seed, run in runs.items():
        v = store.get(run, split, cond, metric).astype(float)
        out[seed] = v - store.get(run, split, drop_from, metric) if drop_from else v
    return out


def _compare(store, label_a, runs_a, label_b, runs_b, metric, cond, drop_from=None, **info) -> dict[str, Any]:
    c = paired(_values(store, runs_a, metric, cond, drop_from), _values(store, runs_b, metric, cond, drop_from))
    return {"a": label_a, "b": label_b, "metric": metric, "condition": cond,
            "quantity": f"{cond} - {drop_from}" if drop_from else cond,
            "runs_a": sorted(runs_a.values()), "runs_b": sorted(runs_b.values()), **info, **c}


def _pairs(comps: list[dict]) -> dict[str, int]:
    """Outcome of each pair (A vs one opponent B) over the metrics: +1 if A is significantly
    better on every metric, -1 if B is significantly better on at least one and A on none,
    0 otherwise (no significant difference, or the metrics disagree)."""
    by: dict[str, list[int]] = defaultdict(list)
    for c in comps:
        by[f"{c['a']} vs {c['b']}"].append(c["direction"])
    return {k: 1 if all(d > 0 for d in ds) else -1 if (min(ds) < 0 and max(ds) <= 0) else 0
            for k, ds in by.items()}


def _beats_all(comps: list[dict]) -> str:
    """Cell rule for "A beats every B": confirmed if A wins every pair, refuted if some B wins
    its pair, inconclusive otherwise."""
    out = list(_pairs(comps).values())
    if -1 in out:
        return REFUTED
    return CONFIRMED if out and all(o == 1 for o in out) else INCONCLUSIVE


def _beats_one(comps: list[dict]) -> str:
    """Cell rule for "some A beats B": confirmed if some A wins its pair, refuted if B wins
    every pair, inconclusive otherwise."""
    out = list(_pairs(comps).values())
    if 1 in out:
        return CONFIRMED
    return REFUTED if out and all(o == -1 for o in out) else INCONCLUSIVE


def _overall(cells: list[dict]) -> tuple[str, str]:
    """A claim holds where it is stated: confirmed if confirmed in every cell, refuted if
    refuted in at least one, inconclusive otherwise."""
    v = [c["verdict"] for c in cells]
    counts = ", ".join(f"{k} in {v.count(k)}" for k in (CONFIRMED, REFUTED, INCONCLUSIVE) if v.count(k))
    if not v:
        return INCONCLUSIVE, "no cell has the runs this claim needs"
    if all(x == CONFIRMED for x in v):
        return CONFIRMED, f"{counts} of {len(v)} cells"
    return (REFUTED if REFUTED in v else INCONCLUSIVE), f"{counts} of {len(v)} cells"


def _trained(tr: float) -> str:
    return "clean-trained" if tr == 0 else "noise-trained"


def claim_l2_clean(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"L2 is optimal for clean images".

    Per architecture, among clean-trained models on clean test inputs: L2 vs each of none,
    L1 and L1+L2, on PSNR and SSIM (6 tests per architecture). Confirmed for an architecture
    if L2 is significantly better than each of them on both metrics; refuted if some other
    regularizer is significantly better than L2 on a metric and not significantly worse on
    the other; inconclusive otherwise (no difference, or PSNR and SSIM disagree).
    """
    cells = []
    for model in ("ae", "vae"):
        l2 = cell(runs, model, "l2", 0.0)
        comps = [_compare(store, "L2", l2, REG_LABEL[o], cell(runs, model, o, 0.0), m, "clean", cell_label=model)
                 for o in ("none", "l1", "l1+l2") for m in METRICS if l2 and cell(runs, model, o, 0.0)]
        cells.append({"cell": MODEL_LABEL[model], "comparisons": comps})
    return _finish(cells, _beats_all)


def claim_l1_noise(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"L1 or L1+L2 help under noise".

    Per architecture and training condition (clean-trained, noise-trained), on test inputs
    with Gaussian noise at the grid's sigma: L1 vs none and L1+L2 vs none, on PSNR and SSIM.
    A regularizer "helps" if it is significantly better than none on both metrics. Confirmed
    for a cell if L1 or L1+L2 helps; refuted if each of them is significantly worse than none
    on some metric and better on none; inconclusive otherwise.
    """
    noisy = gaussian_condition(sigma)
    cells = []
    for model in ("ae", "vae"):
        for tr in (0.0, sigma):
            base = cell(runs, model, "none", tr)
            comps = [_compare(store, REG_LABEL[r], cell(runs, model, r, tr), "Baseline", base, m, noisy, reg=r)
                     for r in ("l1", "l1+l2") for m in METRICS if base and cell(runs, model, r, tr)]
            cells.append({"cell": f"{MODEL_LABEL[model]}, {_trained(tr)}", "comparisons": comps})
    return _finish(cells, _beats_one)


def claim_ae_quality(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"AEs are better than VAEs for quality".

    Per regularizer, clean-trained models on clean test inputs: AE vs VAE on PSNR and SSIM.
    Confirmed for a regularizer if the AE is significantly better on both; refuted if the
    VAE is significantly better on one and not worse on the other; inconclusive otherwise
    (no difference, or PSNR and SSIM disagree).
    """
    cells = []
    for reg in REGS:
        ae, vae = cell(runs, "ae", reg, 0.0), cell(runs, "vae", reg, 0.0)
        comps = [_compare(store, "AE", ae, "VAE", vae, m, "clean") for m in METRICS if ae and vae]
        cells.append({"cell": REG_LABEL[reg], "comparisons": comps})
    return _finish(cells, _beats_all)


def claim_vae_robust(store: Store, runs: list[dict], sigma: float) -> dict[str, Any]:
    """"The VAE is more robust to noise".

    Robustness = the per-image change of a metric from clean to noisy test inputs (Gaussian
    noise at the grid's sigma, same images), in absolute units (dB, SSIM). Per regularizer
    and training condition: VAE change vs AE change, on PSNR and SSIM. Confirmed for a cell
    if the VAE loses significantly less on both metrics; refuted if it loses significantly
    more on one and not less on the other; inconclusive otherwise. (A model that reconstructs
    less detail can lose less; this is about the drop, not the level.)
    """
    noisy = gaussian_condition(sigma)
    cells = []
    for reg in REGS:
        for tr in (0.0, sigma):
            ae, vae = cell(runs, "ae", reg, tr), cell(runs, "vae", reg, tr)
            comps = [_compare(store, "VAE", vae, "AE", ae, m, noisy, drop_from="clean") for m in METRICS if ae and vae]
            cells.append({"cell": f"{REG_LABEL[reg]}, {_trained(tr)}", "comparisons": comps})
    return _finish(cells, _beats_all)


def _finish(cells: list[dict], rule: Callable[[list[dict]], str]) -> dict[str, Any]:
    cells = [c for c in cells if c["comparisons"]]
    decide([x for c in cells for x in c["comparisons"]])  # one family per claim
    for c in cells:
        c["verdict"] = rule(c["comparisons"])
    verdict, tally = _overall(cells)
    return {"verdict": verdict, "tally": tally, "cells": cells}


def converged(run: dict) -> bool:
    """A summary row's convergence flag (``evaluation.convergence``); rows written without one are not."""
    return bool((run.get("convergence") or {}).get("converged"))


NOT_CONVERGED = "not converged"


def unfit_runs(runs: list[dict], baselines: dict | None) -> dict[str, list[str]]:
    """{run: reasons} of the summary rows unfit for a verdict: "not converged", "at the mean image"."""
    out = {}
    for r in runs:
        why = ([NOT_CONVERGED] if not converged(r) else []) + ([AT_MEAN] if AT_MEAN in run_flags(r, baselines) else [])
        if why:
            out[r["run"]] = why
    return out


def refuse_unfit(claim: dict[str, Any], unfit: dict[str, list[str]]) -> dict[str, Any]:
    """Withhold the verdict of a claim whose comparisons use a run unfit for one (``unfit_runs``).

    The statistics stay in the file (they describe those models), but an undertrained model, or one
    that returns the mean face, says nothing about a setting, so the verdict and every cell verdict
    become "inconclusive", and the tally says why: "runs not converged: 3 of the 8 runs it uses;
    runs at the mean image: 4 of the 8 runs it uses".
    """
    used = {r for c in claim["cells"] for x in c["comparisons"] for r in (*x["runs_a"], *x["runs_b"])}
    bad = {r: unfit[r] for r in sorted(used & set(unfit))}
    if bad:
        counts = {why: sum(why in w for w in bad.values()) for why in (NOT_CONVERGED, AT_MEAN)}
        claim.update(verdict=INCONCLUSIVE, unfit_runs=bad,
                     tally="; ".join(f"runs {why}: {k} of the {len(used)} runs it uses" for why, k in counts.items() if k),
                     unconverged_runs=[r for r, w in bad.items() if NOT_CONVERGED in w])
        for c in claim["cells"]:
            c["verdict"] = INCONCLUSIVE
    return claim


CLAIMS = {
    "l2_clean": ("L2 is optimal for clean images", claim_l2_clean),
    "l1_noise": ("L1 or L1+L2 help under noise", claim_l1_noise),
    "ae_quality": ("AEs are better than VAEs for quality", claim_ae_quality),
    "vae_robust": ("The VAE is more robust to noise", claim_vae_robust),
}


def denoising_comparisons(store: Store, runs: list[dict], rows: list[dict], sigma: float) -> list[dict[str, Any]]:
    """Noise-trained minus clean-trained, per model x regularization x Gaussian level of the noise
    sweep (``rows``), PSNR and SSIM; one Holm family."""
    comps = []
    for model in ("ae", "vae"):
        for reg in REGS:
            clean, noisy = cell(runs, model, reg, 0.0), cell(runs, model, reg, sigma)
            if not (clean and noisy):
                continue
            for level, cond in levels(rows, "gaussian"):
                if all(store.has(r, "test", cond, "psnr") for r in (*clean.values(), *noisy.values())):
                    for m in METRICS:
                        comps.append(_compare(store, "noise-trained", noisy, "clean-trained", clean, m, cond,
                                              model=model, reg=reg, level=level))
    return decide(comps)


def sampled_z_comparisons(store: Store, runs: list[dict]) -> list[dict[str, Any]]:
    """Clean-trained VAEs on clean test inputs: decoded from mu vs from a sampled z; one Holm family."""
    comps = []
    for reg in REGS:
        c = {s: r for s, r in cell(runs, "vae", reg, 0.0).items() if store.has(r, "test", "sampled_z", "psnr")}
        for m in METRICS if c else ():
            comps.append({"reg": reg, "metric": m,
                          **paired(_values(store, c, m, "clean"), _values(store, c, m, "sampled_z"))})
    return decide(comps)


def check_claims(runs_dir: str | Path, summary: dict | None = None, write: bool = True) -> dict[str, Any]:
    """Every paired test of a grid from its stored per-image arrays; writes ``runs_dir/claims.json``."""
    runs_dir = Path(runs_dir)
    summary = summary or load_summary(runs_dir)
    sigma = noise_sigma(summary.get("grid"))
    store, runs = Store(runs_dir), summary["runs"]
    rows = noise_runs(runs_dir, summary)
    out: dict[str, Any] = {"test": TEST_NAME, "alpha": ALPHA, "split": "test", "noise_sigma": sigma,
                           "seeds": sorted({r["seed"] for r in runs}), "runs_dir": runs_dir.as_posix(),
                           "converged": {"n": sum(map(converged, runs)), "of": len(runs)}, "claims": {}}
    unfit = unfit_runs(runs, summary.get("baselines"))
    for key, (text, fn) in CLAIMS.items():
        claim = {"claim": text, "definition": " ".join((fn.__doc__ or "").split()), **fn(store, runs, sigma)}
        out["claims"][key] = refuse_unfit(claim, unfit)
    out["denoising"] = denoising_comparisons(store, runs, rows, sigma) if rows else []
    out["sampled_z"] = sampled_z_comparisons(store, runs)
    if write:
        write_json(runs_dir / CLAIMS_JSON, out)
    return out
