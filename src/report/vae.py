"""The VAE diagnosed (and the AE where it applies): KL per dimension, its rate–distortion plane, tables, a paragraph.

Reads the store only: each run's ``diagnostics`` (summary rows, sweep rows), the grid's ``pca_curve.json``
(PCA-k's test PSNR per k) and ``rd/*.json`` (real bytes). The definitions are in docs/vae-diagnostics.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..results import REG_LABEL, load_rd, noise_sigma, preview_status, read_pca_curves, runs_by_cell
from ..stats import mean_std
from ..utils import atomic_write
from .style import COLORS, DPI, RD_STYLE, VAE_FIGURES
from .tables import DAGGER, head, trained, unconverged_cells

PREVIEW = "preview: not converged"  # results.preview_status's words for a figure of an unconverged run


def _converged(rows: list[dict]) -> bool:
    return all((r.get("convergence") or {}).get("converged") for r in rows)


def _title(text: str, rows: list[dict], label: str, grid: dict | None = None) -> str:
    """The figure title: ``results.preview_status`` first ("preview: not converged" when a shown run has not
    converged, "preview: preset NAME" for a smaller preset), then ``text`` and ``label``."""
    tag = preview_status(grid, rows)
    return (f"{tag}. " if tag else "") + text + (f"\n{label}" if label else "")


def _save(fig: Figure, path: Path, title: str) -> Path:
    """The PNG, atomically, with its title also in the file's metadata (PNG "Title")."""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png", metadata={"Title": title}))


def vae_diag(row: dict) -> dict | None:
    """A VAE run's diagnostics (metrics.json ``diagnostics``), or None when it has none."""
    d = row.get("diagnostics") or {}
    return d if "rate_bits_per_image" in d else None


def _psnr(row: dict) -> float:
    return row["test"]["clean"]["psnr"]


def _tr(tr: float, sigma: float) -> str:
    return f"{trained(tr, sigma)}-trained"


def beta_points(sweeps: list[dict]) -> list[tuple[float, list[dict]]]:
    """[(β, the metrics rows of its seeds)] of the β sweep's points that hold diagnostics, by β."""
    by: dict[float, list[dict]] = {}
    for p in sweeps:
        if p["sweep"] == "beta" and vae_diag(p["metrics"]):
            by.setdefault(float(p["value"]), []).append(p["metrics"])
    return sorted(by.items())


# ---------------------------------------------------------------- figures

def kl_figure(summary: dict, path: Path, label: str = "") -> Path | None:
    """Sorted per-dimension KL (bits) of each VAE grid cell (lowest seed), regularizer × training, with the
    active-unit count as a dashed line; None when no VAE run holds diagnostics."""
    cells, by_name = runs_by_cell(summary), {r["run"]: r for r in summary["runs"]}
    sigma = noise_sigma(summary.get("grid"))
    shown = {k: by_name[v] for k, v in cells.items() if k[0] == "vae" and vae_diag(by_name[v])}
    if not shown:
        return None
    trs = sorted({k[2] for k in shown})
    regs = [reg for reg in REG_LABEL if any(k[1] == reg for k in shown)]
    fig = Figure(figsize=(3.1 * len(regs), 2.5 * len(trs) + 0.7))
    axes = fig.subplots(len(trs), len(regs), squeeze=False, sharey=True)
    for i, tr in enumerate(trs):
        for j, reg in enumerate(regs):
            ax, row = axes[i, j], shown.get(("vae", reg, tr))
            if row is None:
                ax.set_axis_off()
                continue
            d = vae_diag(row)
            kl = np.sort(np.asarray(d["kl_per_dim_bits"]))[::-1]
            ax.plot(np.arange(1, len(kl) + 1), kl, drawstyle="steps-mid", color=COLORS[reg], lw=1.2)
            ax.axvline(d["active_units"] + 0.5, color="k", ls="--", lw=0.8,
                       label=f"{d['active_units']} active (Var μ > {d['active_threshold']:g})")
            ax.set_title(f"{REG_LABEL[reg]}, {_tr(tr, sigma)}: {d['rate_bits_per_image']:.3g} bits/image", fontsize=8)
            ax.set(xlabel="latent dimension, by KL", ylabel="KL (bits per image)" if j == 0 else None)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    title = "VAE: KL per latent dimension (test split, z = μ, lowest seed), sorted"
    return _save(fig, path, _title(title, list(shown.values()), label, summary.get("grid")))


def plane_figure(runs_dir: Path, summary: dict, sweeps: list[dict], path: Path, label: str = "") -> Path | None:
    """Left: test PSNR against bits per pixel: each VAE run's KL rate, the real bytes of its coded μ and of
    PCA (``rd/``, when computed), the β sweep's KL rates as a curve. Right: test PSNR against dimensions:
    PCA-k's curve, each VAE at its active units and at its PCA-equivalent size. None without diagnostics."""
    vae = [r for r in summary["runs"] if r["model"] == "vae" and vae_diag(r)]
    if not vae:
        return None
    sigma, betas = noise_sigma(summary.get("grid")), beta_points(sweeps)
    loaded = load_rd(runs_dir)
    curves = loaded[1] if loaded else {}
    fig = Figure(figsize=(11.5, 4.6))
    ax, ax2 = fig.subplots(1, 2)
    seen: set[str] = set()
    for r in vae:
        d, filled = vae_diag(r), r["noise_train"] == 0
        name = f"{REG_LABEL[r['reg']]}, {_tr(r['noise_train'], sigma)}"
        style = dict(color=COLORS[r["reg"]], facecolors=COLORS[r["reg"]] if filled else "white", zorder=3,
                     marker="o" if filled else "s", s=28, label=None if name in seen else name)
        seen.add(name)
        ax.scatter(max(d["rate_bits_per_pixel"], 1e-6), _psnr(r), **style)
        ax2.scatter(d["active_units"], _psnr(r), **style)
        k = d.get("pca_equivalent", {}).get("k")
        if k is not None:
            ax2.plot([d["active_units"], k], [_psnr(r)] * 2, ":", color=COLORS[r["reg"]], lw=0.8)
            ax2.scatter(k, _psnr(r), marker="x", color=COLORS[r["reg"]], s=30, zorder=3)
    for key, name in (("vae", "VAE: coded μ, real bytes (b bits)"), ("pca", "PCA: coded coefficients, real bytes")):
        if key in curves:
            c = curves[key]["results"]
            ax.plot(c["bpp"], c["psnr"], marker=RD_STYLE[key][1], ms=4, color=RD_STYLE[key][0], label=name)
    mean = ((summary.get("baselines") or {}).get("test") or {}).get("mean image")
    for a in (ax, ax2):
        if mean:
            a.axhline(mean["psnr"], color="0.4", ls=":", lw=0.9, label="mean image (0 B)")
    if betas:
        x = [mean_std([vae_diag(m)["rate_bits_per_pixel"] for m in ms])[0] for _, ms in betas]
        au = [mean_std([vae_diag(m)["active_units"] for m in ms])[0] for _, ms in betas]
        y = [mean_std([_psnr(m) for m in ms])[0] for _, ms in betas]
        ax.plot(np.maximum(x, 1e-6), y, "-D", color="k", ms=4, lw=1, label="β sweep: KL rate")
        ax2.plot(au, y, "-D", color="k", ms=4, lw=1, label="β sweep")
        for (b, _), xi, ai, yi in zip(betas, x, au, y):
            ax.annotate(f"β={b:g}", (max(xi, 1e-6), yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax2.annotate(f"β={b:g}", (ai, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    pca = _pca_curve(runs_dir, vae)
    if pca:
        ax2.plot(pca["k"], pca["psnr"], "-^", color=RD_STYLE["pca"][0], ms=3,
                 label=f"PCA-k (fit on {pca['n_train']} train)")
    ax2.axvline(vae_diag(vae[0])["latent_dim"], color="0.6", lw=0.8, ls="--", label="VAE latent size")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = ax.get_xlim()
    if hi / lo < 30:  # within about a decade and a half the decades alone may not be labelled at all
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
    else:
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if not curves:
        ax.text(0.02, 0.02, "no rd/ curves: `python -m src rd` measures the real bytes", transform=ax.transAxes,
                fontsize=6, color="0.4")
    ax2.set_xscale("symlog", linthresh=1, base=2)
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set(xlabel="bits per pixel", ylabel="test PSNR (dB)", title="Rate: KL (bits/pixel) vs real bytes")
    ax2.set(xlabel="dimensions (VAE: active units ●, PCA-equivalent size ×)", ylabel="test PSNR (dB)",
            title="Dimensions: VAE vs PCA-k")
    for a in (ax, ax2):
        a.title.set_fontsize(9)
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=6)
    shown = vae + [m for _, ms in betas for m in ms]
    title = "VAE rate–distortion plane (test split, z = μ)"
    return _save(fig, path, _title(title, shown, label, summary.get("grid")))


def _minor_label(v: float, _=None) -> str:
    """Plain labels at 2 and 5 × 10^n only (all minor labels would overlap)."""
    return f"{v:g}" if v > 0 and f"{v:e}"[0] in "25" else ""


def _pca_curve(runs_dir: Path, rows: list[dict]) -> dict | None:
    curves = read_pca_curves(runs_dir)
    key = (vae_diag(rows[0]).get("pca_equivalent") or {}).get("curve")
    return curves.get(key) or next(iter(curves.values()), None)


def vae_figures(runs_dir: Path, figures: Path, summary: dict, sweeps: list[dict], label: str = "") -> list[Path]:
    """Both diagnostics figures (``style.VAE_FIGURES``) of the runs that hold diagnostics."""
    kl = kl_figure(summary, figures / VAE_FIGURES[0], label)
    plane = plane_figure(Path(runs_dir), summary, sweeps, figures / VAE_FIGURES[1], label)
    return [p for p in (kl, plane) if p is not None]


# ---------------------------------------------------------------- tables and the paragraph

def _num(values: list[float], digits: int) -> str:
    m, s, n = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def pca_k_text(eqs: list[dict]) -> str:
    """PCA-equivalent size over seeds: mean k, or "> k_max" / "≤ 0 (mean image)" at the curve's ends."""
    if any(e.get("bound") == "above" for e in eqs):
        return f"> {eqs[0]['k_max']:g}"
    if all(e.get("bound") == "below" for e in eqs):
        return "0 (mean image)"
    ks = [e["k"] for e in eqs if e.get("k") is not None]
    return _num(ks, 1) if ks else "—"  # no finite test PSNR to match


def _groups(runs: list[dict], model: str) -> dict[tuple[str, float], list[dict]]:
    out: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        if r["model"] == model and (r.get("diagnostics") or {}).get("pca_equivalent"):
            out.setdefault((r["reg"], r["noise_train"]), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][1], list(REG_LABEL).index(kv[0][0]))))


def vae_table(runs: list[dict], sigma: float) -> str:
    lines = head(["Regularization", "trained", "rate (bits / image)", "bits / pixel", "active units",
                  "recon (per image)", "ELBO (nats)", "test PSNR (dB)", "PCA-equivalent k"])
    late = unconverged_cells(runs)
    for (reg, tr), rs in _groups(runs, "vae").items():
        ds = [vae_diag(r) for r in rs]
        lines.append(f"| {REG_LABEL[reg]}{DAGGER if ('vae', reg, tr) in late else ''} | {trained(tr, sigma)} | "
                     f"{_num([d['rate_bits_per_image'] for d in ds], 1)} | "
                     f"{_num([d['rate_bits_per_pixel'] for d in ds], 4)} | "
                     f"{_num([d['active_units'] for d in ds], 0)} of {ds[0]['latent_dim']} | "
                     f"{_num([d['recon'] for d in ds], 1)} ({ds[0]['recon_kind'].upper()}) | "
                     f"{_num([d['elbo'] for d in ds], 1)} | {_num([_psnr(r) for r in rs], 2)} | "
                     f"{pca_k_text([d['pca_equivalent'] for d in ds])} |")
    return "\n".join(lines)


def ae_table(runs: list[dict], sigma: float) -> str:
    lines = head(["Regularization", "trained", "latent (C × H × W)", "active entries (Var > 0.01)",
                  "varying entries", "constant channels", "test PSNR (dB)", "PCA-equivalent k"])
    late = unconverged_cells(runs)
    for (reg, tr), rs in _groups(runs, "ae").items():
        ds = [r["diagnostics"] for r in rs]
        n = ds[0]["latent_entries"]
        lines.append(f"| {REG_LABEL[reg]}{DAGGER if ('ae', reg, tr) in late else ''} | {trained(tr, sigma)} | "
                     f"{' × '.join(map(str, ds[0]['latent_shape']))} | "
                     f"{_num([d['active_entries'] for d in ds], 0)} of {n} | "
                     f"{_num([d['varying_entries'] for d in ds], 0)} of {n} | "
                     f"{_num([d['dead_channels'] for d in ds], 0)} of {ds[0]['latent_channels']} | "
                     f"{_num([_psnr(r) for r in rs], 2)} | {pca_k_text([d['pca_equivalent'] for d in ds])} |")
    return "\n".join(lines)


def _n(x: float) -> str:
    """A number for prose: 3 significant digits, whole with thousands separators from 100 on."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _coded(rd: tuple[dict, dict] | None) -> dict | None:
    """The VAE's coded-μ point at the rd step's reference bits (b = 8), or None."""
    if not rd or "vae" not in rd[1]:
        return None
    r, b = rd[1]["vae"]["results"], rd[0].get("reference_bits", 8)
    i = next((i for i, s in enumerate(r["setting"]) if s == f"b={b}"), None)
    return None if i is None else {"b": b, "bytes": r["bytes"][i], "bpp": r["bpp"][i], "psnr": r["psnr"][i]}


def paragraph(summary: dict, rd: tuple[dict, dict] | None, sweeps: list[dict]) -> str:
    """What the diagnostics show, from the numbers; "preview" and no conclusion where a run has not converged."""
    vae = [r for r in summary["runs"] if r["model"] == "vae" and vae_diag(r)]
    if not vae:
        return ""
    base = min(vae, key=lambda r: (r["reg"] != "none", r["noise_train"] != 0, r["seed"]))
    d, betas = vae_diag(base), beta_points(sweeps)
    eq = d["pca_equivalent"]
    worth = {"above": f": more than PCA reaches with {eq['k_max']:g} components",
             "below": ": no more than the mean image gives"}.get(
        eq.get("bound"), f": as much as PCA with about {_n(eq['k'])} component(s)" if eq.get("k") is not None else "")
    text = (f"The {REG_LABEL[base['reg']].lower()}, {_tr(base['noise_train'], noise_sigma(summary.get('grid')))} VAE "
            f"(`{base['run']}`) spends {_n(d['rate_bits_per_image'])} bits per image on its KL term "
            f"({d['rate_bits_per_pixel']:.3g} bits per pixel), keeps {d['active_units']} of its {d['latent_dim']} "
            f"latent dimensions active (Var_x(μ_d) > {d['active_threshold']:g}) and reaches {_psnr(base):.2f} dB "
            f"test PSNR{worth}." + (f" Its active dimensions carry {_n(d['rate_bits_per_image'] / d['active_units'])} "
                                     "bits each on average." if d["active_units"] else ""))
    coded = _coded(rd)
    if coded:
        text += (f" Its μ coded at {coded['b']} bits per value takes {coded['bytes']:.0f} bytes per image "
                 f"({coded['bpp']:.3g} bits per pixel, {coded['psnr']:.2f} dB), "
                 f"{_n(8 * coded['bytes'] / max(d['rate_bits_per_image'], 1e-9))}× the KL rate.")
    if len(betas) > 1:
        rates = [mean_std([vae_diag(m)["rate_bits_per_image"] for m in ms])[0] for _, ms in betas]
        ps = [mean_std([_psnr(m) for m in ms])[0] for _, ms in betas]
        text += (f" Over the β sweep (β = {', '.join(f'{b:g}' for b, _ in betas)}) the rate goes "
                 f"{' → '.join(_n(x) for x in rates)} bits per image and test PSNR "
                 f"{' → '.join(f'{p:.2f}' for p in ps)} dB.")
    shown = vae + [m for _, ms in betas for m in ms]
    if not _converged(shown):
        late = sum(not (r.get("convergence") or {}).get("converged") for r in shown)
        return (f"**Preview ({late} of {len(shown)} VAE runs not converged).** {text} These runs have not "
                "converged: the numbers describe undertrained models, and no conclusion is drawn from them.")
    idle = d["latent_dim"] - d["active_units"]
    if idle:
        verb = "carries" if idle == 1 else "carry"
        text += (f" So {idle} of the {d['latent_dim']} dimensions {verb} almost no information about the image: "
                 "their posterior stays at the prior (Lucas et al. 2019 explain why a linear decoder's noise "
                 "level decides how many stay in use).")
    return text


def vae_markdown(summary: dict, rd: tuple[dict, dict] | None, sweeps: list[dict], figures_rel: str,
                 written: list[Path]) -> str:
    """The report's diagnostics subsection ('' when no run holds diagnostics); ``written``: the figures drawn."""
    sigma, text = noise_sigma(summary.get("grid")), paragraph(summary, rd, sweeps)
    if not text:
        return ""
    names = {p.name for p in written}
    lines = ["#### The VAE diagnosed: rate, active units, PCA-equivalent size", "", text, "",
             "Test split, clean inputs, z = μ (no sampling). Rate = mean over images of KL(q(z|x) ‖ N(0, I)) in "
             "bits (Alemi et al. 2018); active units: Var_x(μ_d) > 0.01 (Burda et al. 2016); PCA-equivalent k: "
             "PCA components (fitted on the training split) that reach the same test PSNR, interpolated between "
             "measured k. Definitions: docs/vae-diagnostics.md.", "", vae_table(summary["runs"], sigma), ""]
    lines += [line for n in VAE_FIGURES if n in names for line in (f"![{n}]({figures_rel}/{n})", "")]
    if _groups(summary["runs"], "ae"):
        lines += ["AE latent: feature-map entries (channel × position) whose value varies across test images.", "",
                  ae_table(summary["runs"], sigma), ""]
    return "\n".join(lines)
