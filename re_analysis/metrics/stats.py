"""Intervals, paired comparisons and design power for attack accuracy, with the identity as
the unit.

An attack accuracy is a mean of per-reconstruction verdicts (0/1) nested in three levels:
seeds (each retrains every target, prior draw and initial latents), identities (the
attacked classes) within a seed, and restarts of one identity. Restarts of one identity
are not independent draws, so every interval here first averages the values per
(seed, identity) — the **cluster** — and treats the clusters as the data:

- with 2 or more seeds: a t-interval on the per-seed means (df = seeds - 1), the exact
  interval for normal seed means. A bootstrap over 3-9 seeds under-covers (3 seeds: 0.83-0.94
  of the time), and the two-level bootstrap used before from 20 seeds on resampled identities
  inside resampled seeds, counting the identity variance twice (14-28% wider, no coverage gain:
  the rules review), so there is one method at every seed count;
- with one seed: a t-interval over the identity means (df = identities - 1), which says
  nothing of seed-to-seed variation (``method`` says so).

**No degenerate certainty.** Seed means are averages of 0/1 verdicts, so several seeds can
give the SAME mean (each loses 1 of 40 hits) and their spread is zero. The standard error
of the mean is therefore never taken below the **identity floor**, the part of it that the
identities' sampling alone implies, ``sqrt(sum_s var_s / n_s) / S`` (``var_s``: the variance
of seed ``s``'s cluster means, ``n_s`` their number): the variance of a seed mean is the seed
component plus that identity part, so the floor only removes values that cannot be true and
the interval stays valid (conservative where the floor binds). Where nothing varies at any
level (every cluster mean equal), there is no interval (NaN bounds, p-value NaN), never a
zero-width one; ``method`` says which case applied.

The p-value is computed at the same level (the t-test of the per-seed means, or identity
means); a coverage simulation with known seed and identity effects, including samples with
identical seed means, is in the tests.

A defense is compared with ``none`` on PAIRED runs: the same seed and identities (and
initial latents) under both, so the per-pair difference removes the shared randomness; the
difference is averaged per cluster and given the same interval.

Sizing a design: :func:`variance_components` estimates the seed, identity and restart
variances from a finished run; :func:`expected_half_width` gives the half-width a design
(seeds x identities x restarts) will reach, and :func:`design_mde` the smallest effect it
detects with 80% power (exact, from the noncentral t). More identities and seeds buy power;
more restarts barely do (they only shrink the restart term).

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

__all__ = ["identity_column", "judgement_intervals", "compare_with_none", "bootstrap_interval", "clustered_interval", "paired_comparison", "interval_table", "paired_table",
           "cluster_means", "variance_components", "expected_half_width", "minimum_detectable_effect", "design_mde",
           "NO_DIFFERENCE"]

NO_DIFFERENCE = "no measurable difference"


def _values(x, name: str) -> np.ndarray:
    v = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64).ravel()
    if len(v) == 0:
        raise ReAnalysisError(f"{name} is empty; an interval needs at least one value")
    if not np.isfinite(v).all():
        raise ReAnalysisError(f"{name} holds NaN or infinite values; drop them before computing an interval")
    return v


def _labels(x, n: int, what: str) -> np.ndarray:
    if x is None:
        return np.zeros(n, dtype=np.int64)
    g = np.asarray(x).ravel()
    if len(g) != n:
        raise ReAnalysisError(f"{what} must give one label per value: {len(g)} labels for {n} values")
    return g


def bootstrap_interval(values, confidence: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval over one set of INDEPENDENT values
    (scipy.stats.bootstrap). For clustered data use :func:`clustered_interval`.

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


def cluster_means(values, seeds=None, units=None) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``values`` per (seed, unit) cluster, and each cluster's seed.

    ``units`` (e.g. the attacked identity) label the values within a seed; ``None``: every
    value is its own unit.

    Example:
        >>> cluster_means([1, 0, 1, 1], seeds=[0, 0, 0, 0], units=[7, 7, 8, 8])
        (array([0.5, 1. ]), array([0, 0]))
    """
    v = _values(values, "values")
    s = _labels(seeds, len(v), "seeds")
    u = np.arange(len(v)) if units is None else _labels(units, len(v), "units")
    keys = np.rec.fromarrays([s, u])
    uniq, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=v, minlength=len(uniq))
    counts = np.bincount(inverse.ravel(), minlength=len(uniq))
    return sums / counts, np.asarray(uniq.f0)


def clustered_interval(values, seeds=None, units=None, confidence: float = 0.95,
                       bounds: tuple[float, float] | None = None) -> dict:
    """Mean of ``values`` and its interval with the (seed, unit) cluster as the unit (module doc).

    Returns ``estimate`` (mean of the seed means), ``ci_low``, ``ci_high``, ``p_value``
    (two-sided, against 0), ``se`` and ``df`` (the interval at another level is
    ``estimate +- t_{df} se``), ``method``, ``floored`` (whether the identity floor set the
    standard error), ``n_seeds``, ``n_units`` (clusters) and ``n`` (values). ``bounds``: where
    the true mean must lie (``(0, 1)`` for a proportion); the interval is clipped to them (a
    t-interval over few identity means of a proportion near 0 or 1 reaches past them, and no
    value there is possible: clipping only removes impossible values, so coverage is kept).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> out = clustered_interval(rng.random(300) < np.repeat([0.2, 0.4, 0.7], 100), seeds=np.repeat([0, 1, 2], 100),
        ...                          units=np.tile(np.repeat(np.arange(20), 5), 3))
        >>> out["method"], out["n_seeds"], out["n_units"]
        ('t over 3 seed means', 3, 60)
        >>> same = clustered_interval(np.r_[np.zeros(39), -1.0] .tolist() * 3, seeds=np.repeat([0, 1, 2], 40))
        >>> same["ci_low"] < same["estimate"] < same["ci_high"], same["floored"]  # 3 identical seed means
        (True, True)
    """
    if not 0 < confidence < 1:
        raise ReAnalysisError(f"confidence must lie in (0, 1), got {confidence}")
    v = _values(values, "values")
    if bounds is not None:
        return _clipped(clustered_interval(v, seeds, units, confidence), bounds)
    means, mseeds = cluster_means(v, seeds, units)
    seed_keys = np.unique(mseeds)
    out = {"n_seeds": int(len(seed_keys)), "n_units": int(len(means)), "n": int(len(v)), "confidence": confidence,
           "floored": False}
    if len(seed_keys) >= 2:
        blocks = [means[mseeds == k] for k in seed_keys]
        x = np.array([b.mean() for b in blocks])
        method = f"t over {len(x)} seed means"
        # the identity floor: what the identities' sampling alone adds to the variance of the mean
        floor = math.sqrt(sum(b.var(ddof=1) / len(b) for b in blocks if len(b) > 1)) / len(x)
    else:
        x = means
        method = f"t over {len(x)} identity means of one seed (seed-to-seed variation not covered)"
        floor = 0.0
    est = float(x.mean())
    df = len(x) - 1
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
    if floor > se:
        se, out["floored"] = floor, True
        method += " (standard error at the identity floor)"
    if df < 1 or se == 0:
        why = "one value" if df < 1 else "no variation at any level"
        return {**out, "estimate": est, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "se": float("nan"), "df": df, "method": f"{method}: {why}, no interval"}
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(est) / se, df))
    return {**out, "estimate": est, "ci_low": est - half, "ci_high": est + half, "p_value": p, "se": se, "df": df,
            "method": method}


def _clipped(out: dict, bounds: tuple[float, float]) -> dict:
    lo, hi = bounds
    return {**out, "ci_low": float(np.clip(out["ci_low"], lo, hi)) if np.isfinite(out["ci_low"]) else out["ci_low"],
            "ci_high": float(np.clip(out["ci_high"], lo, hi)) if np.isfinite(out["ci_high"]) else out["ci_high"]}


def paired_comparison(defense_hits, none_hits, groups=None, units=None, confidence: float = 0.95) -> dict:
    """Defense minus ``none`` on paired reconstructions (same seed, identity and restart).

    The differences are averaged per (seed, identity) and given :func:`clustered_interval`
    (``groups``: each pair's seed; ``units``: its identity). Returns ``difference``,
    ``ci_low``, ``ci_high``, ``p_value`` (at the same level), ``se``, ``df``, ``method`` and
    the verdict: ``"lower"``, ``"higher"`` or "no measurable difference" (the interval
    covers zero).

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
    out = clustered_interval(d - b, groups, units, confidence)
    lo, hi = out["ci_low"], out["ci_high"]
    verdict = "lower" if hi < 0 else "higher" if lo > 0 else NO_DIFFERENCE
    return {**out, "difference": out.pop("estimate"), "verdict": verdict, "n_pairs": out["n"]}


def variance_components(values, seeds, units) -> dict:
    """Method-of-moments estimates of the three nested variance components of ``values``:
    ``seed`` (between seeds), ``unit`` (between identities of one seed) and ``within``
    (between restarts of one identity), from the one-way nested ANOVA mean squares (Searle,
    Casella & McCulloch, "Variance Components", 1992, ch. 3; averaged sizes where the design
    is unbalanced). Negative estimates are set to 0.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> seed_fx = np.repeat(rng.normal(0, 0.1, 4), 200)
        >>> unit_fx = np.repeat(rng.normal(0, 0.2, 40), 20)
        >>> y = 0.5 + seed_fx + unit_fx + rng.normal(0, 0.3, 800)
        >>> c = variance_components(y, np.repeat(np.arange(4), 200), np.repeat(np.arange(40), 20))
        >>> abs(c["within"] - 0.09) < 0.01, abs(c["unit"] - 0.04) < 0.03
        (True, True)
    """
    v = _values(values, "values")
    s = _labels(seeds, len(v), "seeds")
    u = _labels(units, len(v), "units")
    keys = np.rec.fromarrays([s, u])
    uniq, inv = np.unique(keys, return_inverse=True)
    inv = inv.ravel()
    n_c = np.bincount(inv)
    m_c = np.bincount(inv, weights=v) / n_c
    seed_of = np.asarray(uniq.f0)
    seed_keys = np.unique(seed_of)
    m_s = np.array([v[s == k].mean() for k in seed_keys])
    r = float(np.mean(n_c))                                   # restarts per identity
    n_u = float(np.mean([np.sum(seed_of == k) for k in seed_keys]))  # identities per seed
    df_w = len(v) - len(uniq)
    ms_w = float(np.sum((v - m_c[inv]) ** 2) / df_w) if df_w > 0 else 0.0
    seed_idx = np.searchsorted(seed_keys, seed_of)
    df_u = len(uniq) - len(seed_keys)
    ms_u = float(np.sum(n_c * (m_c - m_s[seed_idx]) ** 2) / df_u) if df_u > 0 else 0.0
    df_s = len(seed_keys) - 1
    ms_s = float(n_u * r * np.sum((m_s - v.mean()) ** 2) / df_s) if df_s > 0 else 0.0
    within = ms_w
    unit = max(0.0, (ms_u - ms_w) / r) if df_u > 0 else 0.0
    seed_var = max(0.0, (ms_s - ms_u) / (n_u * r)) if df_s > 0 else float("nan")
    return {"seed": seed_var, "unit": unit, "within": within, "n_seeds": int(len(seed_keys)),
            "units_per_seed": n_u, "restarts": r}


def expected_half_width(components: dict, n_seeds: int, n_units: int, restarts: int = 1,
                        confidence: float = 0.95) -> float:
    """Expected half-width of :func:`clustered_interval` (the t-interval on seed means) for a
    design of ``n_seeds`` x ``n_units`` identities x ``restarts``, from
    :func:`variance_components` (of the quantity compared: a paired difference's components
    for a comparison)::

        t_{1 - a/2, S - 1} * sqrt((seed + unit / n + within / (n r)) / S)

    Example:
        >>> c = {"seed": 0.0, "unit": 0.012, "within": 0.20}
        >>> round(expected_half_width(c, 3, 8, 5), 3), round(expected_half_width(c, 3, 40, 1), 3)
        (0.2, 0.181)
    """
    if n_seeds < 2 or n_units < 1 or restarts < 1:
        raise ReAnalysisError("a design needs at least 2 seeds, 1 identity and 1 restart")
    seed = components["seed"] if np.isfinite(components["seed"]) else 0.0
    var_seed_mean = seed + components["unit"] / n_units + components["within"] / (n_units * restarts)
    return float(stats.t.ppf(0.5 + confidence / 2, n_seeds - 1) * math.sqrt(var_seed_mean / n_seeds))


def minimum_detectable_effect(se: float, df: int, alpha: float = 0.05, power: float = 0.80) -> float:
    """The smallest true difference a two-sided t-test at ``alpha`` with standard error ``se``
    and ``df`` degrees of freedom detects with probability ``power``:
    ``(t_{1 - a/2, df} + t_{power, df}) * se`` (the usual normal-theory approximation).

    Example:
        >>> round(minimum_detectable_effect(0.03, 7), 3)
        0.098
    """
    if not (se >= 0 and df >= 1):
        return float("nan")
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def design_mde(components: dict, n_seeds: int, n_units: int, restarts: int = 1, alpha: float = 0.05,
               power: float = 0.80) -> float:
    """The smallest true difference a design of ``n_seeds`` x ``n_units`` identities x
    ``restarts`` detects with probability ``power`` (two-sided t-test over the seed means at
    ``alpha``), from variance components measured BEFORE the data (a pilot run's
    :func:`variance_components`): exact, from the noncentral t with ``n_seeds - 1`` degrees of
    freedom and the standard error those components give (:func:`expected_half_width`'s).
    Not the observed standard error: power computed from the data it is reported with says
    nothing new (post-hoc power), and the normal approximation of
    :func:`minimum_detectable_effect` overstates the power at 2 degrees of freedom (0.77 for 0.80).

    Example:
        >>> c = {"seed": 0.0055, "unit": 0.287, "within": 0.0}
        >>> round(design_mde(c, 10, 100), 3)
        0.091
    """
    from scipy import optimize

    if n_seeds < 2 or n_units < 1 or restarts < 1:
        return float("nan")
    seed = components.get("seed", 0.0)
    seed = seed if np.isfinite(seed) else 0.0
    var = seed + components["unit"] / n_units + components.get("within", 0.0) / (n_units * restarts)
    se, df = math.sqrt(var / n_seeds), n_seeds - 1
    if not se > 0:
        return float("nan")
    crit = stats.t.ppf(1 - alpha / 2, df)
    # P(|T| > crit) for T = (Z + nc) / sqrt(V / df), V ~ chi2(df), averaged over 4,000 quantiles
    # of V (by hand: scipy's noncentral t returns NaN at the noncentralities of 1-2 df)
    scale = crit * np.sqrt(stats.chi2.ppf((np.arange(4000) + 0.5) / 4000, df) / df)

    def shortfall(delta):
        nc = delta / se
        return float(np.mean(stats.norm.sf(scale - nc) + stats.norm.cdf(-scale - nc))) - power

    return float(optimize.brentq(shortfall, 0.0, se * (2 * crit + 10)))


def _group_rows(items, by):
    by = [by] if isinstance(by, str) else [b for b in by if b in items]
    if not by:
        yield {}, items
        return
    for key, g in items.groupby(by, sort=False):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,))), g


def interval_table(items, columns, by=(), seed: str = "seed", unit: str | None = None, confidence: float = 0.95):
    """Per ``by`` group, each of ``columns`` as ``<col>`` (estimate), ``<col>_ci_low``,
    ``<col>_ci_high``, ``<col>_se`` and ``<col>_df`` from :func:`clustered_interval` (clusters:
    ``seed`` x ``unit``; ``unit=None``: every row its own unit), plus ``n_items``, ``n_seeds``,
    ``n_units`` and the ``method``. NaN values are left out; a column absent or all NaN in a
    group gives NaN; a 0/1 column (a judge's hits) is a proportion, its interval kept within
    [0, 1]. The one path every level interval of the suite takes.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"defense": ["none"] * 4, "seed": [0, 0, 1, 1], "hit": [1, 1, 0, 1]})
        >>> interval_table(t, ["hit"], ["defense"])[["defense", "hit", "n_items"]].values.tolist()
        [['none', 0.75, 4]]
    """
    import pandas as pd

    rows = []
    for row, g in _group_rows(items, by):
        method = None
        for c in columns:
            v = pd.to_numeric(g[c], errors="coerce") if c in g else pd.Series(dtype=float)
            keep = v.notna().to_numpy()
            if not keep.any():
                row.update({c: np.nan, f"{c}_ci_low": np.nan, f"{c}_ci_high": np.nan, f"{c}_se": np.nan,
                            f"{c}_df": np.nan})
                continue
            x = v[keep].to_numpy(float)
            out = clustered_interval(x, g[seed].to_numpy()[keep], None if unit is None else g[unit].to_numpy()[keep],
                                     confidence, bounds=(0.0, 1.0) if np.isin(x, (0.0, 1.0)).all() else None)
            row.update({c: out["estimate"], f"{c}_ci_low": out["ci_low"], f"{c}_ci_high": out["ci_high"],
                        f"{c}_se": out["se"], f"{c}_df": out["df"]})
            method = out["method"]
        row.update({"n_items": len(g), "n_seeds": g[seed].nunique(),
                    "n_units": int(g[[seed, unit]].drop_duplicates().shape[0]) if unit else len(g), "method": method})
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(items, column: str, reference: str = "none", arms=None, arm: str = "defense", by=(),
                 pair=("seed", "index"), seed: str = "seed", unit: str | None = None, confidence: float = 0.95,
                 components: bool = False):
    """Each ``arm`` value (default: every one but ``reference``) minus ``reference`` on the
    items both have, paired by ``pair``, per ``by`` group: :func:`paired_comparison` with the
    (seed, ``unit``) cluster as the unit. Columns: the ``by`` keys, ``arm``, ``reference``,
    ``judge`` (= ``column``) and the comparison's fields (with ``components=True`` also the
    differences' :func:`variance_components`). Pairs whose ``label`` differs between the arms
    are refused (a pair is one identity under both). The one path every paired comparison of
    the suite takes.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"defense": ["none"] * 4 + ["re"] * 4, "seed": [0, 0, 1, 1] * 2,
        ...                   "index": [0, 1] * 4, "hit": [1, 1, 1, 1, 0, 1, 0, 1]})
        >>> paired_table(t, "hit")[["defense", "difference", "n_pairs"]].values.tolist()
        [['re', -0.5, 4]]
    """
    import pandas as pd

    pair = list(pair)
    rows = []
    for key, g in _group_rows(items, by):
        g = g.dropna(subset=[column])
        ref = g[g[arm] == reference].drop_duplicates(pair).set_index(pair)
        names = [a for a in (g[arm].unique() if arms is None else arms) if a != reference]
        for name in names:
            d = g[g[arm] == name].drop_duplicates(pair).set_index(pair)
            both = ref.index.intersection(d.index)
            if len(both) == 0:
                continue
            if "label" in g and "label" not in pair:  # a pair is one item under both arms: the same identity
                bad = (d.loc[both, "label"].to_numpy() != ref.loc[both, "label"].to_numpy())
                if bad.any():
                    first = both[int(np.flatnonzero(bad)[0])]
                    raise ReAnalysisError(
                        f"paired comparison of {name!r} with {reference!r} on {column!r}: {int(bad.sum())} of "
                        f"{len(both)} pairs ({dict(zip(pair, first if isinstance(first, tuple) else (first,)))} first) "
                        "hold different labels under the two arms; pair items of the same identity (run both arms "
                        "with the same seeds, classes and per_class)")
            units = (None if unit is None else both.get_level_values(unit).to_numpy() if unit in pair
                     else d.loc[both, unit].to_numpy())
            x, y = d.loc[both, column].to_numpy(float), ref.loc[both, column].to_numpy(float)
            groups = both.get_level_values(seed).to_numpy()
            cmp = paired_comparison(x, y, groups=groups, units=units, confidence=confidence)
            if components:  # of the differences, for a design's power (variance_components)
                cmp["components"] = variance_components(x - y, groups, np.arange(len(x)) if units is None else units)
            rows.append({**key, arm: name, "reference": reference, "judge": column, **cmp})
    return pd.DataFrame(rows)


# --- tables of judgements: the identity is the unit -----------------------------------------
def identity_column(table) -> str | None:
    """The column that names each row's attacked identity (the unit of every interval), if any:
    ``label`` in the suite's tables."""
    return "label" if "label" in table else None


def judgement_intervals(judgements, by=("dataset", "defense", "attack"), columns=None, confidence: float = 0.95):
    """Mean and interval of every verdict column per group, with the (seed, identity) cluster
    as the unit (:func:`interval_table`): ``<col>``, ``<col>_ci_low``, ``<col>_ci_high``, plus
    ``n_reconstructions``, ``n_seeds``, ``n_units``. ``columns``: default every judge's hit
    columns (:func:`re_analysis.metrics.judges.judge_columns`), ``hit_target`` and ``all_accept``.

    ``judgements`` stacks the runs' judgements.csv with the group columns and ``seed``.
    """
    if columns is None:
        from .judges import judge_columns

        columns = [*judge_columns(), "hit_target", "all_accept"]
    out = interval_table(judgements, [c for c in columns if c in judgements], by, unit=identity_column(judgements),
                         confidence=confidence)
    return out.rename(columns={"n_items": "n_reconstructions"})


def compare_with_none(judgements, column: str = "hit_top1", by=("dataset", "attack"), baseline: str = "none",
                      confidence: float = 0.95):
    """Each defense against ``baseline`` on paired reconstructions (same seed, same identity):
    difference, interval, p-value and verdict ("no measurable difference" when the interval
    covers zero), per ``by`` group, identities as the unit (:func:`paired_table`)."""
    return paired_table(judgements, column, reference=baseline, by=by, unit=identity_column(judgements),
                        confidence=confidence)
