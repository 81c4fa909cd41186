"""The README's headline: one label line, one table per model and one figure, from a grid's summary.

The label says which data, generator, preset, seeds, epochs, device and date made the numbers, and
"preview, not converged" where that is so. The whole report goes to ``docs/results.md``.
"""
from __future__ import annotations

from pathlib import Path

from ..config import PROTOCOL_PRESETS
from ..results import MODEL_LABEL, REG_LABEL, aggregate, gaussian_condition, noise_sigma, preset_of
from ..utils import UserError
from .tables import fmt, flags_note, head, row_name

HEADLINE_MARKERS = ("<!-- headline:start -->", "<!-- headline:end -->")
HEADLINE_FIGURE = "reconstructions.png"
PUBLISHED = Path("results/full-synthetic")  # the published protocol results, beside the README


def status(summary: dict) -> str:
    """"**preview, not converged** (3 of 16 runs converged)", "**preview**", or "all 16 runs converged"."""
    runs = summary["runs"]
    ok = sum(bool((r.get("convergence") or {}).get("converged")) for r in runs)
    protocol = preset_of(summary.get("grid")).get("name") in PROTOCOL_PRESETS
    if ok < len(runs):
        return f"**{'' if protocol else 'preview, '}not converged** ({ok} of {len(runs)} runs converged)"
    return f"all {len(runs)} runs converged" if protocol else f"**preview** (all {len(runs)} runs converged)"


def label_line(summary: dict) -> str:
    """Dataset and generator, preset, seeds, epochs, device, date, and whether it is a preview."""
    g = summary.get("grid") or {}
    p, s = preset_of(g), preset_of(g).get("image_size")
    seeds = sorted({r["seed"] for r in summary["runs"]})
    data = g.get("dataset") or "unknown data"
    gen = g.get("generator")  # the sample's SAMPLE.json: {"generator", "version", ...}; None for other folders
    if isinstance(gen, dict) and gen.get("generator"):  # -> "synthetic sample (generator src.synthetic v2)"
        data = f"{data.split(' (')[0]} (generator {gen['generator']} v{gen.get('version', 1)})"
    started = str(g.get("started") or "")[:10] or "date not recorded"
    parts = [f"{data}: {g.get('n_images')} images at {s}×{s} px", f"preset `{p.get('name')}`",
             f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}", f"{p.get('epochs')} epochs",
             f"{g.get('device')}, torch {g.get('torch')}", f"trained {started}", status(summary)]
    note = "" if g.get("source") == "real" else " Synthetic faces, not Flickr-Faces."
    return "*" + " · ".join(parts) + f".{note}*"


def headline_table(summary: dict, model: str) -> str:
    """Regularizers (and the reference rows) × clean / noisy inputs, PSNR and SSIM, "val / test"."""
    runs, sigma = summary["runs"], noise_sigma(summary.get("grid"))
    noisy = gaussian_condition(sigma)
    cols = [(metric, cond) for cond in ("clean", noisy) for metric in ("psnr", "ssim")]
    lines = head(["Regularization"] + [f"{m.upper()} {'clean' if c == 'clean' else f'noisy σ={sigma:g}'} (val / test)"
                                      for m, c in cols])
    agg = {(m, c, s): aggregate(runs, s, c, m) for m, c in cols for s in ("val", "test")}
    for reg in REG_LABEL:
        keys = {"clean": (model, reg, 0.0), noisy: (model, reg, sigma)}  # noisy inputs: the noise-trained model
        if keys["clean"] not in agg[cols[0] + ("test",)]:
            continue
        cells = [" / ".join(fmt(m, agg[(m, c, s)].get(keys[c])) for s in ("val", "test")) for m, c in cols]
        lines.append(f"| {row_name(REG_LABEL[reg], summary, list(keys.values()))} | " + " | ".join(cells) + " |")
    base = summary.get("baselines") or {}
    for row in base.get("test") or {}:
        cells = [" / ".join(fmt(m, (base[s][row][m], 0.0, 1)) if c == "clean" and row in base.get(s, {}) else "—"
                            for s in ("val", "test")) for m, c in cols]
        lines.append(f"| *{row} (reference)* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_markdown(summary: dict, figures_rel: str, docs_rel: str) -> str:
    """The README's results block; links are relative to the README."""
    sigma = noise_sigma(summary.get("grid"))
    lines = [label_line(summary), "",
             f"Test and validation means of per-image PSNR (dB) and SSIM (data range 1). *clean*: models trained on "
             f"clean images, clean inputs; *noisy*: models trained with Gaussian noise σ = {sigma:g} (clean targets), "
             f"noisy inputs. The VAE is scored on its posterior mean μ. Reference rows need no training: the mean "
             f"training image, and PCA fitted on the training split. † marks a row with a run that has not converged.",
             ""]
    note = flags_note(summary)
    if note:
        lines += [note, ""]
    for model in MODEL_LABEL:
        if any(r["model"] == model for r in summary["runs"]):
            lines += [f"**{MODEL_LABEL[model]}**", "", headline_table(summary, model), ""]
    lines += [f"![test reconstructions]({figures_rel}/{HEADLINE_FIGURE})", "",
              f"Every table and figure (each regularizer and noise condition, loss curves, rate–distortion in real "
              f"bytes, the parameter analysis and the four claims): [{docs_rel}]({docs_rel}).", ""]
    return "\n".join(lines)


def check_publishable(runs_dir: Path, readme: Path, name: str | None) -> None:
    """Refuse to publish a grid of preset ``name`` when it is a preview and ``results/full-synthetic`` beside the
    README holds the protocol results (``pipeline.reproduce`` asks before training, ``report`` before writing)."""
    published = readme.parent / PUBLISHED
    if (published / "summary.json").exists() and name not in PROTOCOL_PRESETS \
            and runs_dir.resolve() != published.resolve():
        raise UserError(f"{published} holds the published protocol results, and {runs_dir} is a preview (preset "
                        f"{name}): publishing it would replace them; run `python -m src report {runs_dir}` without "
                        f"--publish, or publish {published}")
