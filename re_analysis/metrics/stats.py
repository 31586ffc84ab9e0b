"""Intervals, paired comparisons and sample sizes for attack accuracy.

An attack accuracy is a mean of per-reconstruction verdicts (0/1) from several seeds; the
seeds (target, prior draw, initial latents) make the reconstructions of one run correlated.
So the suite's intervals are **hierarchical percentile bootstraps** (Davison & Hinkley,
"Bootstrap Methods and their Application", 1997, sec. 3.8; Saravanan et al., "Application
of the hierarchical bootstrap to multi-level data in neuroscience", 2020): resample seeds
with replacement, then reconstructions within each drawn seed, take the mean. With one
seed it is the ordinary percentile bootstrap over reconstructions. Resampling both levels
is conservative: where the seeds do not differ it counts the within-seed noise twice and
is about sqrt(2) wider than the flat bootstrap (Davison & Hinkley, sec. 3.8); with few
seeds (3) the seed level alone would give only 10 distinct resamples.

A defense is compared with ``none`` on PAIRED runs: the same seed and the same initial
latents give reconstruction ``i`` of seed ``s`` under both, so the per-pair difference
removes the shared randomness. Its interval is the same hierarchical bootstrap of the mean
difference, its p-value a paired sign-flip permutation test (scipy), and where the
interval covers zero the verdict is "no measurable difference".

Example:
    >>> import numpy as np
    >>> hits = np.r_[np.ones(80), np.zeros(20)]
    >>> m, lo, hi = bootstrap_interval(hits, seed=0)
    >>> m, lo < 0.8 < hi
    (0.8, True)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..errors import ReAnalysisError

__all__ = ["bootstrap_interval", "hierarchical_bootstrap", "paired_comparison", "proportion_sample_size",
           "reconstructions_per_class", "NO_DIFFERENCE"]

NO_DIFFERENCE = "no measurable difference"


def _values(x, name: str) -> np.ndarray:
    v = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64).ravel()
    if len(v) == 0:
        raise ReAnalysisError(f"{name} is empty; an interval needs at least one value")
    if not np.isfinite(v).all():
        raise ReAnalysisError(f"{name} holds NaN or infinite values; drop them before computing an interval")
    return v


def bootstrap_interval(values, confidence: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval over one set of values (scipy.stats.bootstrap).

    Example:
        >>> bootstrap_interval([1, 1, 1, 1])  # no spread, no width
        (1.0, 1.0, 1.0)
    """
    v = _values(values, "values")
    if np.ptp(v) == 0:  # scipy warns on degenerate data; the interval is the point
        return float(v[0]), float(v[0]), float(v[0])
    res = stats.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed), vectorized=True)
    return float(v.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def _check_groups(values: np.ndarray, groups) -> tuple[list[np.ndarray], np.ndarray]:
    g = np.asarray(groups).ravel()
    if len(g) != len(values):
        raise ReAnalysisError(f"groups must give one seed per value: {len(g)} groups for {len(values)} values")
    keys = np.unique(g)
    return [values[g == k] for k in keys], keys


def hierarchical_bootstrap(values, groups=None, confidence: float = 0.95, n_resamples: int = 10_000,
                           seed: int = 0) -> tuple[float, float, float]:
    """Mean over all values and its hierarchical percentile-bootstrap interval (seeds, then
    values within seeds). ``groups`` gives each value's seed; ``None``: one group.

    Hand-written: scipy's bootstrap resamples one level only.

    Example:
        >>> import numpy as np
        >>> hits = np.r_[np.ones(20), np.ones(15), np.zeros(5), np.ones(10), np.zeros(10)]
        >>> seeds = np.repeat([0, 1, 2], 20)
        >>> m, lo, hi = hierarchical_bootstrap(hits, seeds)
        >>> round(m, 3), lo < m < hi
        (0.75, True)
    """
    v = _values(values, "values")
    if not 0 < confidence < 1:
        raise ReAnalysisError(f"confidence must lie in (0, 1), got {confidence}")
    if groups is None:
        return bootstrap_interval(v, confidence, n_resamples, seed)
    blocks, _ = _check_groups(v, groups)
    if len(blocks) == 1:
        return bootstrap_interval(blocks[0], confidence, n_resamples, seed)
    rng = np.random.default_rng(seed)
    sizes = np.array([len(b) for b in blocks])
    sums = np.zeros(n_resamples)
    counts = np.zeros(n_resamples)
    drawn = rng.integers(0, len(blocks), size=(n_resamples, len(blocks)))
    for j, b in enumerate(blocks):  # every bootstrap replicate draws block j this many times
        times = (drawn == j).sum(1)
        for t in np.unique(times[times > 0]):
            rows = np.flatnonzero(times == t)
            inner = rng.integers(0, len(b), size=(len(rows), t * len(b)))
            sums[rows] += b[inner].sum(1)
            counts[rows] += t * sizes[j]
    means = sums / counts
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(v.mean()), float(lo), float(hi)


def paired_comparison(defense_hits, none_hits, groups=None, confidence: float = 0.95,
                      n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Defense minus ``none`` on paired reconstructions (same seed, same index).

    Returns the mean difference (negative: the defense lowers attack accuracy), its
    hierarchical bootstrap interval, a two-sided paired sign-flip permutation p-value
    (scipy.stats.permutation_test) and the verdict: ``"lower"``, ``"higher"`` or
    "no measurable difference" (the interval covers zero).

    Example:
        >>> import numpy as np
        >>> none, re_ = np.ones(60), np.tile([1.0, 0.0], 30)  # RE halves the hits in every seed
        >>> out = paired_comparison(re_, none, groups=np.repeat([0, 1, 2], 20))
        >>> out["difference"], out["verdict"]
        (-0.5, 'lower')
    """
    d = _values(defense_hits, "defense hits")
    b = _values(none_hits, "none hits")
    if len(d) != len(b):
        raise ReAnalysisError(f"paired comparison needs the same reconstructions under both: {len(d)} vs {len(b)}; "
                              "run both with the same seeds and per_class")
    diff = d - b
    mean, lo, hi = hierarchical_bootstrap(diff, groups, confidence, n_resamples, seed)
    if np.all(diff == 0):
        p = 1.0
    else:
        res = stats.permutation_test((d, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                     permutation_type="samples", n_resamples=n_resamples,
                                     alternative="two-sided", rng=np.random.default_rng(seed))
        p = float(res.pvalue)
    verdict = NO_DIFFERENCE if lo <= 0 <= hi else ("lower" if hi < 0 else "higher")
    return {"difference": mean, "ci_low": lo, "ci_high": hi, "p_value": p, "verdict": verdict,
            "n_pairs": int(len(diff)), "confidence": confidence}


def proportion_sample_size(baseline: float = 0.5, difference: float = 0.10, alpha: float = 0.05,
                           power: float = 0.80) -> int:
    """Reconstructions per arm for a two-sided two-proportion z-test to detect ``baseline``
    vs ``baseline - difference`` (Fleiss, Levin & Paik, "Statistical Methods for Rates and
    Proportions", 3rd ed., eq. 4.14, without continuity correction):

        n = (z_{1-a/2} sqrt(2 pbar qbar) + z_{1-b} sqrt(p1 q1 + p2 q2))^2 / difference^2

    ``baseline`` 0.5 is the worst case (largest variance). Unpaired, so conservative for
    the suite's paired design.

    Example:
        >>> proportion_sample_size(0.5, 0.10, 0.05, 0.80)
        388
    """
    p1, p2 = baseline, baseline - difference
    if not (0 < p1 < 1 and 0 < p2 < 1):
        raise ReAnalysisError(f"baseline {baseline} and baseline - difference {p2:.3g} must lie in (0, 1)")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ReAnalysisError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / difference ** 2
    return int(math.ceil(n))


def reconstructions_per_class(num_classes: int, num_seeds: int, baseline: float = 0.5, difference: float = 0.10,
                              alpha: float = 0.05, power: float = 0.80) -> int:
    """Reconstructions per class and seed so that a defense-vs-none difference of
    ``difference`` in attack accuracy is detectable (see :func:`proportion_sample_size`).

    Example:
        >>> reconstructions_per_class(num_classes=5, num_seeds=3)  # mnist5k, 3 seeds
        26
    """
    if num_classes < 1 or num_seeds < 1:
        raise ReAnalysisError("num_classes and num_seeds must be at least 1")
    n = proportion_sample_size(baseline, difference, alpha, power)
    return int(math.ceil(n / (num_classes * num_seeds)))
