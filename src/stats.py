"""Statistics of the analysis: mean ± std over seeds, the paired per-image test and its correction.

Per-image metrics of two models are paired (same test images, and the same noisy inputs:
evaluation noise depends only on the training seed and the condition). With several seeds,
each image's value is first averaged over the seeds both cells share. A difference is called
*significant* when (1) the two-sided Wilcoxon signed-rank test on the per-image differences
(``scipy.stats.wilcoxon``) gives a p-value below ``ALPHA`` after Holm-Bonferroni correction
over all tests of the same family (one claim, or one table), and (2) with two or more seeds,
the mean difference has the same sign in every seed and the mean ± std intervals of the two
cells over seeds do not overlap (the per-image test alone sees only test-image variation, not
training randomness).

Numpy only (scipy on first use): no torch, no files.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ALPHA = 0.05                 # significance level of every family of tests
METRICS = ("psnr", "ssim")   # the tested metrics; higher is better for both (MSE is shown, not tested)
TEST_NAME = ("two-sided Wilcoxon signed-rank test on paired per-image differences (test split; per-image "
             f"values averaged over seeds), Holm-Bonferroni correction within each family, alpha = {ALPHA}; "
             "with 2+ seeds, also the same sign of the difference in every seed and non-overlapping "
             "mean ± std intervals over seeds")


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 (0 for one value), n): the convention of every table and figure."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 if all are zero)."""
    from scipy.stats import wilcoxon  # scipy costs ~0.3 s to import: only when a test runs

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, made monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    adj, running = np.empty_like(p), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, (len(p) - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj.tolist()


def paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict[str, Any]:
    """Paired comparison of two cells' per-image values ({seed: (N,) array}), a - b."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two cells share no seed")
    da = np.mean([a[s] for s in seeds], axis=0)
    db = np.mean([b[s] for s in seeds], axis=0)
    d = da - db
    per_seed = [float(np.mean(a[s] - b[s])) for s in seeds]
    diff = float(np.mean(d))
    ma, mb = mean_std([np.mean(a[s]) for s in seeds]), mean_std([np.mean(b[s]) for s in seeds])
    return {"seeds": seeds, "n_images": int(d.size), "mean_a": ma, "mean_b": mb,
            "diff": diff, "per_seed_diff": per_seed, "p": wilcoxon_p(d),
            "seeds_agree": bool(all(np.sign(x) == np.sign(diff) for x in per_seed)),
            "intervals_apart": bool(len(seeds) < 2 or abs(ma[0] - mb[0]) > ma[1] + mb[1])}


def decide(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm-correct one family in place and mark each comparison's significant direction."""
    for c, p in zip(comparisons, holm([c["p"] for c in comparisons])):
        c["p_holm"] = p
        failed = [why for why, bad in ((f"p (Holm) >= {ALPHA:g}", not p < ALPHA),
                                       ("seeds disagree in sign", not c["seeds_agree"]),
                                       ("seed intervals overlap", not c["intervals_apart"]),
                                       ("no difference", c["diff"] == 0)) if bad]
        c["significant"] = not failed
        c["why_not"] = "; ".join(failed)  # the criteria that failed, named in every table row
        c["direction"] = int(np.sign(c["diff"])) if c["significant"] else 0
    return comparisons
