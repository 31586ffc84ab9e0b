"""The book's verdict on each claim of the MIDRE paper, computed from the study's tables.

Tran, Nguyen et al., "Random Erasing vs. Model Inversion: A Promising Defense or a False
Hope?", TMLR 2025, make eight claims this module tests, each per attack and per judge:

1. RE lowers attack accuracy;                 5. Partial Erasure matters;
2. at little natural-accuracy cost;           6. Random Location matters;
3. reconstructions of an RE model lie nearer  7. RE's privacy-utility trade-off beats the
   erased than private features;                 baselines;
4. private features stay separated from       8. RE adds to other defenses.
   other classes;

Every comparison is **paired** (same seed, identities and initial latents; same test
images) with the (seed, identity) cluster as the unit: restarts of one identity are
averaged first, and the interval is a t-interval on the per-seed means (or a two-level
bootstrap with many seeds; :func:`re_analysis.metrics.stats.clustered_interval`). Each rule
can fail:

- claims 1, 5, 6, 8: the interval of the difference lies on the predicted side — and the
  attack must LEAK against the arm expected to leak more: its accuracy minus its own
  chance rate (unoptimised prior samples the target accepts, judged the same way, 200 per
  class) has an interval above zero; otherwise there is nothing to protect and the row is
  inconclusive;
- claims 5 and 6 are judged only where the arms' natural accuracies do not differ in RE's
  favour by more than ``LITTLE_COST`` (a more accurate target leaks more); claim 5 needs
  both of its comparisons (p=0.5 against RE, and against the same boxes on every image) to
  agree, claim 6 every fixed location;
- claim 2 and claim 4 are non-inferiority tests against ``none`` (natural accuracy within
  ``LITTLE_COST``; held-out class-separation margin within ``SEPARATION_MARGIN``);
- claim 3 restricts to reconstructions the target accepts and compares RE with every
  non-RE arm (a control: erasing may pull any model's reconstructions toward erased
  features) besides the share of more than half;
- claim 7 requires RE to beat EVERY baseline; fewer than ``MIN_SEEDS`` seeds gives no
  verdict.

Each row says what the design could detect (``mde``: the minimum effect a test of this
design finds with 80% power) and, when inconclusive, what it rules out (``rules_out``: no
effect larger than the farther end of the interval).

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
from .metrics.judges import JUDGE_TABLE, PRIMARY_JUDGE, judge_spec

__all__ = ["Claim", "CLAIM_TABLE", "CLAIMS", "ATTACK_CLAIMS", "JUDGES", "LITTLE_COST", "SEPARATION_MARGIN", "CEILING", "MIN_SEEDS", "Roles", "infer_roles",
           "verdict_from_interval", "paired", "leak", "claim_verdicts", "summarize_verdicts", "combine_verdicts"]

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NO_VERDICT = "supported", "not supported", "inconclusive", "no verdict"

@dataclass(frozen=True)
class Claim:
    """One claim of the MIDRE paper: its number, what it says, what it is measured on
    (``attack`` accuracy per attack and judge, ``natural`` accuracy, the feature-space
    ``gap`` or the held-out ``separation``) and what a study needs to test it."""

    number: int
    text: str
    measure: str
    needs: str


# The one table of claims every room reads (verdicts, the report, the notebooks).
CLAIM_TABLE = (
    Claim(1, "RE lowers attack accuracy", "attack", "a `random-erasing` and a `none` target attacked alike"),
    Claim(2, "at little natural-accuracy cost", "natural", "natural.csv (per test image)"),
    Claim(3, "reconstructions of an RE model lie nearer erased than private features", "gap",
          "gap_samples.csv (per reconstruction)"),
    Claim(4, "private features stay separated from other classes", "separation",
          "separation.csv with held-out (test) features"),
    Claim(5, "Partial Erasure matters", "attack", "a Partial Erasure ablation (`re-partial-*`)"),
    Claim(6, "Random Location matters", "attack", "a fixed-location ablation (`re-fixed-*`)"),
    Claim(7, "RE's privacy-utility trade-off beats the baselines", "attack", "a baseline defense (MID, BiDO, NLS, ...)"),
    Claim(8, "RE adds to other defenses", "attack", "a `random-erasing+X` target and `X` alone"),
)
CLAIMS = {c.number: c.text for c in CLAIM_TABLE}
ATTACK_CLAIMS = tuple(c.number for c in CLAIM_TABLE if c.measure == "attack")  # judged per attack and judge

# The judges by name, and what the book calls them (one table: JUDGE_TABLE).
JUDGES = {j.name: j.display for j in JUDGE_TABLE}

LITTLE_COST = 0.03        # "little" natural-accuracy cost: at most 3 points (MIDRE reports drops of 1-3 points)
SEPARATION_MARGIN = 0.05  # claim 4: RE's held-out margin (in [-1, 1]) no more than this below none's
CEILING = 0.95            # an arm at 95% of its judge's ceiling has little left to show
MIN_SEEDS = 3             # fewer seeds give no verdict (no seed-level interval to speak of)


@dataclass
class Roles:
    """Which defense labels of a study play which part in the claims."""

    re: str = "random-erasing"
    partial: list[str] = field(default_factory=list)          # p < 1 at the same expected erased area
    partial_control: list[str] = field(default_factory=list)  # the p < 1 arm's boxes on every image
    location: list[str] = field(default_factory=list)         # a fixed box (centre, corner, ...), same area
    baselines: list[str] = field(default_factory=list)        # other defenses (MID, BiDO, NLS, ...)
    compositions: dict[str, str] = field(default_factory=dict)  # baseline -> "random-erasing+baseline"


def infer_roles(labels, defense_names: dict[str, str] | None = None) -> Roles:
    """Roles from a study's defense labels (``defense_names``: label -> registered defense).

    Partial-erasure and fixed-location ablations are recognised by their registered names
    (``re-partial-boxes`` is the Partial Erasure control, other ``re-partial*`` the p < 1
    arms, ``re-fixed*``); a baseline is any other defense that is neither ``none`` nor a
    Random Erasing variant; ``random-erasing+X`` is X's composition.
    """
    names = defense_names or {}
    labels = list(labels)
    name = {lab: names.get(lab, lab) for lab in labels}
    roles = Roles(re="random-erasing" if "random-erasing" in labels else "")
    for lab in labels:
        n = name[lab]
        if n.startswith("re-partial-boxes"):
            roles.partial_control.append(lab)
        elif n.startswith("re-partial"):
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
    or ``"above"`` (no lower than ``-margin``: a cost of at most ``margin``, non-inferiority).
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


def _unit(table: pd.DataFrame) -> str | None:
    return "label" if "label" in table else None


def paired(table: pd.DataFrame, column: str, defense: str, reference: str, keys=("seed", "index"),
           n_resamples: int = 4000) -> dict | None:
    """``defense`` minus ``reference`` on the items both have (paired by ``keys``), with its
    interval over (seed, identity) clusters; None when they share no item."""
    from .metrics.stats import paired_table

    t = table[table["defense"].isin([defense, reference])]
    out = paired_table(t, column, reference=reference, arms=[defense], pair=keys, unit=_unit(t),
                       n_resamples=n_resamples)
    return None if out.empty else out.iloc[0].to_dict()


def level(table: pd.DataFrame, column: str, defense: str, n_resamples: int = 4000,
          bounds: tuple[float, float] | None = None) -> dict | None:
    """Mean of ``column`` under ``defense`` with its interval over (seed, identity) clusters,
    kept within ``bounds`` (``(0, 1)`` for a share, such as claim 3's share nearer erased)."""
    from .metrics.stats import clustered_interval

    g = table[table["defense"] == defense].dropna(subset=[column])
    if g.empty:
        return None
    unit = _unit(g)
    return clustered_interval(g[column].astype(float).to_numpy(), g["seed"].to_numpy(),
                              None if unit is None else g[unit].to_numpy(), n_resamples=n_resamples, bounds=bounds)


def leak(judgements: pd.DataFrame, chance: pd.DataFrame | None, column: str, defense: str) -> dict | None:
    """Attack accuracy minus its own chance rate against ``defense``, with a t-interval over
    seeds (per seed: the mean of the identity means minus the mean of the chance samples'
    per-class means) — at the level of the attack's interval. None without chance samples."""
    from scipy import stats

    from .metrics.stats import cluster_means

    if chance is None or chance.empty or column not in chance:
        return None
    a = judgements[(judgements["defense"] == defense)].dropna(subset=[column])
    c = chance[(chance["defense"] == defense)].dropna(subset=[column])
    seeds = sorted(set(a["seed"]) & set(c["seed"]))
    if not seeds:
        return None
    diffs, acc, ch = [], [], []
    for s in seeds:
        aa, cc = a[a["seed"] == s], c[c["seed"] == s]
        ma = cluster_means(aa[column].to_numpy(float), units=aa["label"].to_numpy())[0].mean()
        mc = cluster_means(cc[column].to_numpy(float), units=cc["label"].to_numpy())[0].mean()
        diffs.append(ma - mc), acc.append(ma), ch.append(mc)
    d = np.asarray(diffs)
    est = float(d.mean())
    if len(d) < 2:
        return {"estimate": est, "ci_low": np.nan, "ci_high": np.nan, "accuracy": float(np.mean(acc)),
                "chance": float(np.mean(ch)), "n_seeds": len(d)}
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    half = float(stats.t.ppf(0.975, len(d) - 1)) * se
    return {"estimate": est, "ci_low": est - half, "ci_high": est + half, "accuracy": float(np.mean(acc)),
            "chance": float(np.mean(ch)), "n_seeds": len(d)}


VERDICT_COLUMNS = ["claim", "claim_text", "dataset", "attack", "judge", "comparison", "estimate", "ci_low",
                   "ci_high", "p_value", "n", "n_seeds", "n_units", "method", "mde", "rules_out", "verdict", "note"]
SUMMARY_COLUMNS = ["claim", "claim_text", "dataset", "verdict", "judge", "attack", "rules_out", "mde", "detail"]


def _design(cmp: dict | None) -> dict:
    """The design's minimum detectable effect and, for an interval across zero, the bound it
    rules out (no effect larger than the farther end)."""
    from .metrics.stats import minimum_detectable_effect

    if not cmp:
        return {"mde": np.nan, "rules_out": np.nan}
    lo, hi = cmp.get("ci_low", np.nan), cmp.get("ci_high", np.nan)
    mde = minimum_detectable_effect(cmp.get("se", np.nan), int(cmp.get("df", 0) or 0))
    return {"mde": mde, "rules_out": float(max(abs(lo), abs(hi))) if np.isfinite(lo) and np.isfinite(hi) else np.nan}


def _row(claim, dataset, attack, judge, comparison, cmp, verdict, note="", **extra) -> dict:
    cmp = cmp or {}
    est = cmp.get("difference", cmp.get("estimate", np.nan))
    if cmp and cmp.get("n_seeds", MIN_SEEDS) < MIN_SEEDS:
        verdict, note = NO_VERDICT, f"fewer than {MIN_SEEDS} seeds ({cmp.get('n_seeds')}): no verdict"
    return {"claim": claim, "claim_text": CLAIMS[claim], "dataset": dataset, "attack": attack, "judge": judge,
            "comparison": comparison, "estimate": est, "ci_low": cmp.get("ci_low", np.nan),
            "ci_high": cmp.get("ci_high", np.nan), "p_value": cmp.get("p_value", np.nan),
            "n": cmp.get("n_pairs", cmp.get("n", 0)), "n_seeds": cmp.get("n_seeds", 0),
            "n_units": cmp.get("n_units", 0), "method": cmp.get("method", ""), **_design(cmp),
            "verdict": verdict, "note": note, **extra}


def _inconclusive_note(cmp: dict) -> str:
    d = _design(cmp)
    return (f"the interval covers zero: no effect larger than {100 * d['rules_out']:.1f} points "
            f"(the design detects {100 * d['mde']:.1f} with 80% power)")


def _utility(natural: pd.DataFrame | None, dataset: str, protected: str, other: str) -> dict | None:
    """Natural accuracy of ``protected`` minus ``other`` (paired test images)."""
    if natural is None or natural.empty:
        return None
    return paired(natural[natural["dataset"] == dataset], "correct", protected, other)


def _attack_claim(rows, claim, judgements, natural, chance, dataset, attack, judge, defense, reference, expect,
                  comparison, ceilings=None, check_utility=False):
    """One attack-accuracy comparison: ``defense`` minus ``reference``, expected ``expect``."""
    column = judge_spec(judge).column
    cmp = paired(judgements, column, defense, reference)
    if cmp is None:
        return
    verdict = verdict_from_interval(cmp["difference"], cmp["ci_low"], cmp["ci_high"], expect)
    leaker = reference if expect == "negative" else defense  # the arm the paper expects to leak more
    protected = defense if leaker == reference else reference
    lk = leak(judgements, chance, column, leaker)
    extra = {"leak_arm": leaker, "leak_estimate": lk["estimate"] if lk else np.nan,
             "leak_ci_low": lk["ci_low"] if lk else np.nan, "leak_ci_high": lk["ci_high"] if lk else np.nan,
             "leak_accuracy": lk["accuracy"] if lk else np.nan, "leak_chance": lk["chance"] if lk else np.nan}
    note = ""
    if lk is not None and not lk["ci_low"] > 0:
        verdict = INCONCLUSIVE
        note = (f"the attack does not beat its chance rate against {leaker} (accuracy - chance "
                f"{lk['estimate']:+.3f} [{lk['ci_low']:+.3f}, {lk['ci_high']:+.3f}]): nothing leaked to protect")
    if check_utility:
        nat = _utility(natural, dataset, protected, leaker)
        extra.update({"natural_estimate": nat["difference"] if nat else np.nan,
                      "natural_ci_low": nat["ci_low"] if nat else np.nan,
                      "natural_ci_high": nat["ci_high"] if nat else np.nan})
        if nat is not None and not nat["ci_low"] >= -LITTLE_COST and not note:
            verdict = INCONCLUSIVE
            note = (f"{protected}'s natural accuracy is not within {100 * LITTLE_COST:.0f} points of {leaker}'s "
                    f"({nat['difference']:+.3f} [{nat['ci_low']:+.3f}, {nat['ci_high']:+.3f}]): a less accurate "
                    "target leaks less, so the difference cannot be credited to the erasing property")
    if not note and verdict == INCONCLUSIVE:
        note = _inconclusive_note(cmp)
        ceiling = (ceilings or {}).get(judge)
        if ceiling and lk is not None and lk["accuracy"] >= CEILING * ceiling:
            note += f"; {leaker} is at its judge's ceiling ({ceiling:.2f})"
    rows.append(_row(claim, dataset, attack, judge, comparison, cmp, verdict, note, **extra))


def claim_verdicts(judgements: pd.DataFrame, natural: pd.DataFrame | None = None, gap: pd.DataFrame | None = None,
                   separation: pd.DataFrame | None = None, chance: pd.DataFrame | None = None,
                   roles: Roles | None = None, judges=tuple(JUDGES), ceilings: dict | None = None) -> pd.DataFrame:
    """One row per (claim, dataset, attack, judge, comparison) with estimate, interval and verdict.

    Args:
        judgements: per reconstruction — ``dataset, defense, attack, seed, index, label`` and
            the 0/1 judge columns (``hit_top1``, ``hit_robust``, ``hit_pixel``, ...,
            ``hit_target``).
        natural: per private test image — ``dataset, defense, seed, index, correct``.
        gap: per reconstruction — ``dataset, defense, attack, seed, index, label, nearer_erased``.
        separation: per private feature — ``dataset, defense, seed, index, label, margin``
            and ``split`` ("train"/"test"; claim 4 reads the test rows).
        chance: per unoptimised prior sample the target accepts — ``dataset, defense, attack,
            seed, label`` and the judge columns.
        roles: which labels are RE, its ablations, the baselines and the compositions
            (default: :func:`infer_roles` on the labels present).
        judges: the judges (by name) to give verdicts under.
        ceilings: judge name -> its acceptance of held-out private images.
    """
    if judgements.empty:
        raise ReAnalysisError("no judgements to give verdicts on; run the study first")
    roles = roles or infer_roles(judgements["defense"].unique())
    re_ = roles.re
    rows: list[dict] = []
    judges = [j for j in judges if judge_spec(j).column in judgements]
    for (dataset, attack), jg in judgements.groupby(["dataset", "attack"], sort=False):
        cg = None if chance is None or chance.empty else chance[(chance["dataset"] == dataset)
                                                                & (chance["attack"] == attack)]
        common = dict(judgements=jg, natural=natural, chance=cg, dataset=dataset, attack=attack,
                      ceilings=ceilings)
        for judge in judges:
            _attack_claim(rows, 1, judge=judge, defense=re_, reference="none", expect="negative",
                          comparison=f"{re_} vs none", **common)
            for lab in roles.partial:
                _attack_claim(rows, 5, judge=judge, defense=lab, reference=re_, expect="positive",
                              comparison=f"{lab} vs {re_}", check_utility=True, **common)
                for ctl in roles.partial_control:
                    _attack_claim(rows, 5, judge=judge, defense=lab, reference=ctl, expect="positive",
                                  comparison=f"{lab} vs {ctl}", check_utility=True, **common)
            for lab in roles.location:
                _attack_claim(rows, 6, judge=judge, defense=lab, reference=re_, expect="positive",
                              comparison=f"{lab} vs {re_}", check_utility=True, **common)
            for base, comp in roles.compositions.items():
                _attack_claim(rows, 8, judge=judge, defense=comp, reference=base, expect="negative",
                              comparison=f"{comp} vs {base}", **common)
            for base in roles.baselines:
                rows.extend(_tradeoff_rows(jg, natural, dataset, attack, judge, re_, base))
    if natural is not None and not natural.empty:
        for dataset, ng in natural.groupby("dataset", sort=False):
            cmp = paired(ng, "correct", re_, "none")
            if cmp is not None:
                v = verdict_from_interval(cmp["difference"], cmp["ci_low"], cmp["ci_high"], "above", LITTLE_COST)
                rows.append(_row(2, dataset, "", "natural accuracy", f"{re_} vs none", cmp, v,
                                 f"non-inferiority: 'little' = a drop of at most {100 * LITTLE_COST:.0f} points"))
    if gap is not None and not gap.empty:
        rows.extend(_claim3_rows(gap, judgements, roles))
    if separation is not None and not separation.empty:
        held = separation[separation["split"] == "test"] if "split" in separation else separation.iloc[:0]
        for dataset, sg in held.groupby("dataset", sort=False):
            cmp = paired(sg, "margin", re_, "none")
            lv = level(sg, "margin", re_)
            if cmp is None or lv is None:
                continue
            v = verdict_from_interval(cmp["difference"], cmp["ci_low"], cmp["ci_high"], "above", SEPARATION_MARGIN)
            note = (f"non-inferiority on held-out features: RE's mean margin {lv['estimate']:.3f} "
                    f"[{lv['ci_low']:.3f}, {lv['ci_high']:.3f}] may be at most {SEPARATION_MARGIN} below none's")
            rows.append(_row(4, dataset, "", "target features (test)", f"{re_} vs none", cmp, v, note,
                             level=lv["estimate"], level_ci_low=lv["ci_low"], level_ci_high=lv["ci_high"]))
    # A study without RE, or with one defense only, has no comparison: an empty table, not an error.
    out = pd.DataFrame(rows, columns=None if rows else VERDICT_COLUMNS)
    return out.sort_values(["claim", "dataset", "attack"], kind="stable").reset_index(drop=True)


def _claim3_rows(gap: pd.DataFrame, judgements: pd.DataFrame, roles: Roles) -> list[dict]:
    """Claim 3 on the reconstructions the target accepts: under RE more than half are nearer
    an erased than a private feature, and more than under every non-RE arm (the controls)."""
    re_ = roles.re
    keys = ["dataset", "defense", "attack", "seed", "index"]
    g = gap
    if "hit_target" in judgements:
        g = gap.merge(judgements[keys + ["hit_target"]], on=keys, how="left")
        g = g[g["hit_target"].fillna(0).astype(bool)]
    controls = ["none"] + list(roles.baselines)
    rows = []
    for (dataset, attack), gg in g.groupby(["dataset", "attack"], sort=False):
        per = gg.groupby(["defense", "seed", "label"], as_index=False)["nearer_erased"].mean()
        lv = level(per, "nearer_erased", re_, bounds=(0.0, 1.0))
        if lv is None:
            continue
        shifted = {**lv, "ci_low": lv["ci_low"] - 0.5, "ci_high": lv["ci_high"] - 0.5}
        v_level = verdict_from_interval(lv["estimate"] - 0.5, shifted["ci_low"], shifted["ci_high"], "positive")
        for ctl in [c for c in controls if c in set(per["defense"])]:
            cmp = paired(per, "nearer_erased", re_, ctl, keys=("seed", "label"))
            if cmp is None:
                continue
            v_diff = verdict_from_interval(cmp["difference"], cmp["ci_low"], cmp["ci_high"], "positive")
            v = (NOT_SUPPORTED if NOT_SUPPORTED in (v_diff, v_level) else
                 SUPPORTED if v_diff == v_level == SUPPORTED else INCONCLUSIVE)
            note = (f"accepted reconstructions only: under RE {100 * lv['estimate']:.0f}% [{100 * lv['ci_low']:.0f}, "
                    f"{100 * lv['ci_high']:.0f}] are nearer an erased than a private feature (the claim needs more "
                    f"than half, and more than under {ctl})")
            rows.append(_row(3, dataset, attack, "target features", f"{re_} vs {ctl}", cmp, v, note,
                             level=lv["estimate"], level_ci_low=lv["ci_low"], level_ci_high=lv["ci_high"]))
    return rows


def _tradeoff_rows(judgements, natural, dataset, attack, judge, re_, base) -> list[dict]:
    """Claim 7 for one baseline: RE beats it when RE's attack accuracy is lower and its natural
    accuracy not lower by more than LITTLE_COST; the baseline beats RE the other way round;
    anything else is a trade of privacy for utility (inconclusive)."""
    att = paired(judgements, judge_spec(judge).column, re_, base)
    if att is None:
        return []
    nat = _utility(natural, dataset, re_, base)
    nat_ok = nat is not None and nat["ci_low"] >= -LITTLE_COST
    nat_bad = nat is not None and nat["ci_high"] <= LITTLE_COST
    if att["ci_high"] < 0 and nat_ok:
        v, note = SUPPORTED, "RE: lower attack accuracy at no larger utility cost"
    elif att["ci_low"] > 0 and nat_bad:
        v, note = NOT_SUPPORTED, f"{base}: lower attack accuracy at no larger utility cost"
    else:
        v, note = INCONCLUSIVE, ("neither dominates: " + (_inconclusive_note(att) if att["ci_low"] <= 0 <= att["ci_high"]
                                                          else "one trades utility for privacy"))
    extra = {"natural_estimate": nat["difference"] if nat else np.nan,
             "natural_ci_low": nat["ci_low"] if nat else np.nan, "natural_ci_high": nat["ci_high"] if nat else np.nan}
    return [_row(7, dataset, attack, judge, f"{re_} vs {base}", att, v, note, **extra)]


def combine_verdicts(verdicts) -> str:
    """One verdict from the rows of one claim: ``supported`` only when every row is,
    ``not supported`` when any row is, ``no verdict`` when any row has too few seeds, else
    ``inconclusive`` (one supported row among inconclusive ones does not support a claim).

    Example:
        >>> combine_verdicts(["supported", "inconclusive"]), combine_verdicts(["supported", "supported"])
        ('inconclusive', 'supported')
    """
    v = list(verdicts)
    if not v:
        return INCONCLUSIVE
    if NO_VERDICT in v:
        return NO_VERDICT
    if NOT_SUPPORTED in v:
        return NOT_SUPPORTED
    return SUPPORTED if all(x == SUPPORTED for x in v) else INCONCLUSIVE


def summarize_verdicts(verdicts: pd.DataFrame, judge: str = PRIMARY_JUDGE, attack: str | None = None) -> pd.DataFrame:
    """One verdict per (claim, dataset), under ``judge`` and the pre-registered primary
    ``attack`` (default: the first attack in the table) for the attack claims, combined by
    :func:`combine_verdicts`; ``rules_out`` and ``mde`` are the largest over its rows;
    ``detail`` lists each row."""
    rows = []
    if attack is None and "attack" in verdicts and (verdicts["attack"] != "").any():
        attack = next(a for a in verdicts["attack"] if a)
    for (claim, dataset), g in verdicts.groupby(["claim", "dataset"], sort=True):
        if claim in ATTACK_CLAIMS:
            g = g[(g["judge"] == judge) & (g["attack"] == attack)]
        elif claim == 3:
            g = g[g["attack"] == attack]
        if g.empty:
            continue
        verdict = combine_verdicts(g["verdict"])
        detail = "; ".join(f"{r.comparison}{' / ' + r.attack if r.attack else ''}: {r.verdict}" for r in g.itertuples())
        rows.append({"claim": claim, "claim_text": CLAIMS[claim], "dataset": dataset, "verdict": verdict,
                     "judge": judge if claim in ATTACK_CLAIMS else g["judge"].iloc[0],
                     "attack": attack if claim in ATTACK_CLAIMS or claim == 3 else "",
                     "rules_out": float(g["rules_out"].max()) if "rules_out" in g else np.nan,
                     "mde": float(g["mde"].max()) if "mde" in g else np.nan, "detail": detail})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
