"""The book's verdict on each claim of the MIDRE paper, computed from the study's tables.

Tran, Nguyen et al., "Random Erasing vs. Model Inversion: A Promising Defense or a False
Hope?", TMLR 2025, make eight claims this module tests, each per attack and per judge:

1. RE lowers attack accuracy;                 5. Partial Erasure matters;
2. at little natural-accuracy cost;           6. Random Location matters;
3. reconstructions of an RE model lie nearer  7. RE's privacy-utility trade-off beats the
   erased than private features;                 baselines;
4. private features stay separated from       8. RE adds to other defenses.
   other classes;

Every comparison is **paired** (same seed, same initial latents, same test images) and
carries a 95% hierarchical bootstrap interval (seeds, then items within seeds;
:func:`re_analysis.metrics.stats.paired_comparison`). A verdict is

- ``supported`` when the interval lies on the side the paper predicts,
- ``not supported`` when it lies on the other side,
- ``inconclusive`` when it covers zero, or when the attack sits at a ceiling (the
  undefended target's attack accuracy >= 95%: nothing left to lower) or at chance (its
  interval reaches the attack's free chance-acceptance rate: nothing leaked to protect).

Example:
    >>> from re_analysis.verdicts import verdict_from_interval
    >>> verdict_from_interval(-0.12, -0.20, -0.05, expect="negative")
    'supported'
    >>> verdict_from_interval(-0.02, -0.08, 0.03, expect="negative")
    'inconclusive'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import ReAnalysisError

__all__ = ["CLAIMS", "JUDGES", "LITTLE_COST", "CEILING", "Roles", "infer_roles", "verdict_from_interval",
           "paired", "claim_verdicts", "summarize_verdicts"]

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

CLAIMS = {
    1: "RE lowers attack accuracy",
    2: "at little natural-accuracy cost",
    3: "reconstructions of an RE model lie nearer erased than private features",
    4: "private features stay separated from other classes",
    5: "Partial Erasure matters",
    6: "Random Location matters",
    7: "RE's privacy-utility trade-off beats the baselines",
    8: "RE adds to other defenses",
}

# Per-reconstruction verdict columns of judgements.csv, and what the book calls them.
JUDGES = {
    "eval_hit": "evaluation model (open set)",
    "robust_hit": "robust evaluation model (open set)",
    "pixel_hit": "pixel nearest neighbours",
    "eval_hit_closed": "evaluation model (closed set, the field's standard)",
}
PRIMARY_JUDGE = "eval_hit"

LITTLE_COST = 0.03   # "little" natural-accuracy cost: at most 3 points (MIDRE reports drops of 1-3 points)
CEILING = 0.95       # an undefended attack accuracy at or above this leaves nothing to lower


@dataclass
class Roles:
    """Which defense labels of a study play which part in the claims."""

    re: str = "random-erasing"
    partial: list[str] = field(default_factory=list)      # p < 1 at the same expected erased area
    location: list[str] = field(default_factory=list)     # a fixed box (centre, off-centre), same area
    baselines: list[str] = field(default_factory=list)    # other defenses (MID, BiDO, NLS, ...)
    compositions: dict[str, str] = field(default_factory=dict)  # baseline -> "random-erasing+baseline"


def infer_roles(labels, defense_names: dict[str, str] | None = None) -> Roles:
    """Roles from a study's defense labels (``defense_names``: label -> registered defense).

    Partial-erasure and fixed-location ablations are recognised by their registered names
    (``re-partial*``, ``re-fixed*``); a baseline is any other defense that is neither
    ``none`` nor a Random Erasing variant; ``random-erasing+X`` is X's composition.
    """
    names = defense_names or {}
    labels = list(labels)
    name = {lab: names.get(lab, lab) for lab in labels}
    roles = Roles(re="random-erasing" if "random-erasing" in labels else "")
    for lab in labels:
        n = name[lab]
        if n.startswith("re-partial"):
            roles.partial.append(lab)
        elif n.startswith("re-fixed"):
            roles.location.append(lab)
        elif n.startswith("random-erasing+"):
            roles.compositions[n.split("+", 1)[1]] = lab
        elif n in ("none", "none-noaug", "random-erasing") or n.startswith("re-") or "random-erasing" in n:
            continue
        else:
            roles.baselines.append(lab)
    roles.compositions = {b: c for b, c in roles.compositions.items() if b in labels}
    return roles


def verdict_from_interval(estimate: float, low: float, high: float, expect: str = "negative",
                          margin: float = 0.0) -> str:
    """``supported`` / ``not supported`` / ``inconclusive`` from the interval of a difference.

    ``expect``: what the paper predicts of the difference —
    ``"negative"`` (below 0: e.g. RE minus none in attack accuracy), ``"positive"`` (above 0),
    or ``"above"`` (no lower than ``-margin``: a cost of at most ``margin``).
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if expect == "negative":
        return SUPPORTED if high < 0 else NOT_SUPPORTED if low > 0 else INCONCLUSIVE
    if expect == "positive":
        return SUPPORTED if low > 0 else NOT_SUPPORTED if high < 0 else INCONCLUSIVE
    if expect == "above":
        return SUPPORTED if low >= -margin else NOT_SUPPORTED if high < -margin else INCONCLUSIVE
    raise ReAnalysisError(f"expect must be 'negative', 'positive' or 'above', got {expect!r}")


def paired(table: pd.DataFrame, column: str, defense: str, reference: str, keys=("seed", "index"),
           n_resamples: int = 4000) -> dict | None:
    """``defense`` minus ``reference`` on the items both have (paired by ``keys``), with its
    hierarchical bootstrap interval over seeds and items; None when they share no item."""
    from .metrics.stats import paired_comparison

    keys = list(keys)
    a = table[table["defense"] == defense].dropna(subset=[column]).set_index(keys)[column]
    b = table[table["defense"] == reference].dropna(subset=[column]).set_index(keys)[column]
    a = a[~a.index.duplicated()]
    b = b[~b.index.duplicated()]
    both = a.index.intersection(b.index)
    if len(both) == 0:
        return None
    return paired_comparison(a.loc[both].astype(float).to_numpy(), b.loc[both].astype(float).to_numpy(),
                             groups=both.get_level_values("seed").to_numpy(), n_resamples=n_resamples)


def level(table: pd.DataFrame, column: str, defense: str, n_resamples: int = 4000) -> tuple[float, float, float] | None:
    """Mean of ``column`` under ``defense`` with its hierarchical bootstrap interval."""
    from .metrics.stats import hierarchical_bootstrap

    g = table[table["defense"] == defense].dropna(subset=[column])
    if g.empty:
        return None
    return hierarchical_bootstrap(g[column].astype(float).to_numpy(), g["seed"].to_numpy(), n_resamples=n_resamples)


def sensitivity(judgements: pd.DataFrame, judge: str, chance: float | None) -> str | None:
    """Why an attack cannot show a defense's effect: ``"ceiling"``, ``"chance"`` or None."""
    lv = level(judgements, judge, "none")
    if lv is None:
        return None
    mean, low, high = lv
    if mean >= CEILING:
        return "ceiling"
    if chance is not None and np.isfinite(chance) and low <= chance:
        return "chance"
    return None


VERDICT_COLUMNS = ["claim", "claim_text", "dataset", "attack", "judge", "comparison", "estimate", "ci_low",
                   "ci_high", "p_value", "n", "verdict", "note"]
SUMMARY_COLUMNS = ["claim", "claim_text", "dataset", "verdict", "judge", "detail"]


def _row(claim, dataset, attack, judge, comparison, cmp, verdict, note="", **extra) -> dict:
    return {"claim": claim, "claim_text": CLAIMS[claim], "dataset": dataset, "attack": attack, "judge": judge,
            "comparison": comparison, "estimate": cmp["difference"] if cmp else np.nan,
            "ci_low": cmp["ci_low"] if cmp else np.nan, "ci_high": cmp["ci_high"] if cmp else np.nan,
            "p_value": cmp.get("p_value", np.nan) if cmp else np.nan, "n": cmp.get("n_pairs", 0) if cmp else 0,
            "verdict": verdict, "note": note, **extra}


def _attack_claim(rows, claim, judgements, dataset, attack, judge, defense, reference, expect, chance, comparison):
    cmp = paired(judgements, judge, defense, reference)
    if cmp is None:
        return
    why = sensitivity(judgements, judge, chance)
    verdict = verdict_from_interval(cmp["difference"], cmp["ci_low"], cmp["ci_high"], expect)
    note = ""
    if why is not None:
        note = ("the undefended attack is at its ceiling" if why == "ceiling"
                else "the undefended attack does not beat its free chance-acceptance rate")
        verdict = INCONCLUSIVE
    elif verdict == INCONCLUSIVE:
        note = "the interval covers zero: no measurable difference"
    rows.append(_row(claim, dataset, attack, judge, comparison, cmp, verdict, note))


def claim_verdicts(judgements: pd.DataFrame, natural: pd.DataFrame | None = None, gap: pd.DataFrame | None = None,
                   separation: pd.DataFrame | None = None, chance: pd.DataFrame | None = None,
                   roles: Roles | None = None, judges=tuple(JUDGES)) -> pd.DataFrame:
    """One row per (claim, dataset, attack, judge, comparison) with estimate, interval and verdict.

    Args:
        judgements: per reconstruction — ``dataset, defense, attack, seed, index`` and the
            0/1 judge columns (``eval_hit``, ``robust_hit``, ``pixel_hit``, ...).
        natural: per private test image — ``dataset, defense, seed, index, correct``.
        gap: per reconstruction — ``dataset, defense, attack, seed, index, nearer_erased``.
        separation: per private training feature — ``dataset, defense, seed, index, margin``.
        chance: ``dataset, defense, attack`` and ``chance_<judge>`` rates (free acceptance of
            unoptimised prior samples), used to tell an attack at chance.
        roles: which labels are RE, its ablations, the baselines and the compositions
            (default: :func:`infer_roles` on the labels present).
    """
    if judgements.empty:
        raise ReAnalysisError("no judgements to give verdicts on; run the study first")
    roles = roles or infer_roles(judgements["defense"].unique())
    re_ = roles.re
    rows: list[dict] = []
    judges = [j for j in judges if j in judgements]
    for (dataset, attack), jg in judgements.groupby(["dataset", "attack"], sort=False):
        for judge in judges:
            ch = None
            if chance is not None and f"chance_{judge}" in chance:
                c = chance[(chance["dataset"] == dataset) & (chance["attack"] == attack) & (chance["defense"] == "none")]
                ch = float(c[f"chance_{judge}"].mean()) if len(c) else None
            _attack_claim(rows, 1, jg, dataset, attack, judge, re_, "none", "negative", ch, f"{re_} vs none")
            for lab in roles.partial:
                _attack_claim(rows, 5, jg, dataset, attack, judge, lab, re_, "positive", ch, f"{lab} vs {re_}")
            for lab in roles.location:
                _attack_claim(rows, 6, jg, dataset, attack, judge, lab, re_, "positive", ch, f"{lab} vs {re_}")
            for base, comp in roles.compositions.items():
                _attack_claim(rows, 8, jg, dataset, attack, judge, comp, base, "negative", ch, f"{comp} vs {base}")
            for base in roles.baselines:
                rows.extend(_tradeoff_rows(jg, natural, dataset, attack, judge, re_, base))
    if natural is not None and not natural.empty:
        for dataset, ng in natural.groupby("dataset", sort=False):
            cmp = paired(ng, "correct", re_, "none")
            if cmp is not None:
                v = verdict_from_interval(cmp["difference"], cmp["ci_low"], cmp["ci_high"], "above", LITTLE_COST)
                rows.append(_row(2, dataset, "", "natural accuracy", f"{re_} vs none", cmp, v,
                                 f"'little' = a drop of at most {100 * LITTLE_COST:.0f} points"))
    if gap is not None and not gap.empty:
        for (dataset, attack), gg in gap.groupby(["dataset", "attack"], sort=False):
            cmp = paired(gg, "nearer_erased", re_, "none")
            lv = level(gg, "nearer_erased", re_)
            if cmp is None or lv is None:
                continue
            v_diff = verdict_from_interval(cmp["difference"], cmp["ci_low"], cmp["ci_high"], "positive")
            v_level = verdict_from_interval(lv[0] - 0.5, lv[1] - 0.5, lv[2] - 0.5, "positive")
            v = (NOT_SUPPORTED if NOT_SUPPORTED in (v_diff, v_level) else
                 SUPPORTED if v_diff == v_level == SUPPORTED else INCONCLUSIVE)
            rows.append(_row(3, dataset, attack, "target features", f"{re_} vs none", cmp, v,
                             f"under RE {100 * lv[0]:.0f}% [{100 * lv[1]:.0f}, {100 * lv[2]:.0f}] of reconstructions "
                             "are nearer an erased than a private feature (the claim needs more than half, and more "
                             "than without defense)", level=lv[0], level_ci_low=lv[1], level_ci_high=lv[2]))
    if separation is not None and not separation.empty:
        for dataset, sg in separation.groupby("dataset", sort=False):
            lv = level(sg, "margin", re_)
            cmp = paired(sg, "margin", re_, "none")
            if lv is None:
                continue
            v = verdict_from_interval(*lv, expect="positive")
            note = f"mean margin under RE {lv[0]:.3f} [{lv[1]:.3f}, {lv[2]:.3f}] (positive: nearer its own class)"
            if cmp is not None:
                note += f"; RE minus none {cmp['difference']:+.3f} [{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}]"
            rows.append(_row(4, dataset, "", "target features", f"{re_} (vs none beside)", cmp, v, note,
                             level=lv[0], level_ci_low=lv[1], level_ci_high=lv[2]))
    # A study without RE, or with one defense only, has no comparison: an empty table, not an error.
    out = pd.DataFrame(rows, columns=None if rows else VERDICT_COLUMNS)
    return out.sort_values(["claim", "dataset", "attack"], kind="stable").reset_index(drop=True)


def _tradeoff_rows(judgements, natural, dataset, attack, judge, re_, base) -> list[dict]:
    """Claim 7 for one baseline: RE beats it when RE's attack accuracy is lower and its natural
    accuracy not lower by more than LITTLE_COST; the baseline beats RE the other way round;
    anything else is a trade of privacy for utility (inconclusive)."""
    att = paired(judgements, judge, re_, base)
    if att is None:
        return []
    nat = None
    if natural is not None and not natural.empty:
        nat = paired(natural[natural["dataset"] == dataset], "correct", re_, base)
    nat_ok = nat is not None and nat["ci_low"] >= -LITTLE_COST
    nat_bad = nat is not None and nat["ci_high"] <= LITTLE_COST
    if att["ci_high"] < 0 and nat_ok:
        v, note = SUPPORTED, "RE: lower attack accuracy at no larger utility cost"
    elif att["ci_low"] > 0 and nat_bad:
        v, note = NOT_SUPPORTED, f"{base}: lower attack accuracy at no larger utility cost"
    else:
        v, note = INCONCLUSIVE, "neither dominates: the intervals cover zero or one trades utility for privacy"
    extra = {"natural_estimate": nat["difference"] if nat else np.nan,
             "natural_ci_low": nat["ci_low"] if nat else np.nan, "natural_ci_high": nat["ci_high"] if nat else np.nan}
    return [_row(7, dataset, attack, judge, f"{re_} vs {base}", att, v, note, **extra)]


def summarize_verdicts(verdicts: pd.DataFrame, judge: str = PRIMARY_JUDGE) -> pd.DataFrame:
    """One verdict per (claim, dataset) under ``judge`` (claims 2-4 have their own measures):
    the common verdict of its conclusive rows, ``inconclusive`` when all rows are, and
    ``inconclusive (mixed)`` when conclusive rows disagree; ``detail`` lists each row."""
    rows = []
    for (claim, dataset), g in verdicts.groupby(["claim", "dataset"], sort=True):
        if claim in (1, 5, 6, 7, 8):
            g = g[g["judge"] == judge]
        if g.empty:
            continue
        conclusive = sorted(set(g["verdict"]) - {INCONCLUSIVE})
        verdict = (INCONCLUSIVE if not conclusive else conclusive[0] if len(conclusive) == 1
                   else f"{INCONCLUSIVE} (mixed)")
        detail = "; ".join(f"{r.comparison}{' / ' + r.attack if r.attack else ''}: {r.verdict}" for r in g.itertuples())
        rows.append({"claim": claim, "claim_text": CLAIMS[claim], "dataset": dataset, "verdict": verdict,
                     "judge": judge if claim in (1, 5, 6, 7, 8) else g["judge"].iloc[0], "detail": detail})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
