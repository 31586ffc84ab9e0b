"""The conclusions chapter: one verdict per claim with the effect it finds or rules out, the
smallest effect the design could detect, the judges' ceilings, and what the verdicts rest on.

Every function reads the study's tables (``verdict_summary.csv``, ``verdicts.csv``,
``results.csv``, ``summary.csv``) and returns a table or Markdown; nothing is hard-coded.

Example:
    >>> import pandas as pd
    >>> verdict_effect({"verdict": "inconclusive", "estimate": -0.02, "ci_low": -0.05, "ci_high": 0.01,
    ...                 "rules_out": 0.05, "claim": 1})
    'no effect larger than 5.0 points (-2.0 [-5.0, +1.0])'
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from ..errors import ReAnalysisError
from ..metrics.judges import JUDGE_TABLE, judge_ceilings_of, judge_spec
from ..verdicts import CLAIM_TABLE, LITTLE_COST, MIN_SEEDS, claim_of
UNDERTRAINED = 0.90  # natural accuracy below this: the targets are plainly short of convergence


def _display(judge) -> str:
    """What the book calls a judge (a row that is not judged by one keeps its label)."""
    try:
        return judge_spec(judge).display
    except (ReAnalysisError, TypeError):
        return judge if isinstance(judge, str) else ""


def _get(row, key, default=np.nan):
    if hasattr(row, "get"):
        return row.get(key, default)
    return getattr(row, key, default)


def _pts(v: float, signed: bool = False) -> str:
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def _finite(*xs) -> bool:
    try:
        return all(np.isfinite(float(x)) for x in xs)
    except (TypeError, ValueError):
        return False


def verdict_effect(row) -> str:
    """What one verdict (a summary row or a ``verdicts.csv`` row) finds or rules out, in points.

    A conclusive row gives its effect and interval; an inconclusive one the bound it rules
    out ("no effect larger than X points"); a gated one what gated it; claim 3's level is a
    share, claim 4's rows margins, not points.
    """
    est, lo, hi = _get(row, "estimate"), _get(row, "ci_low"), _get(row, "ci_high")
    claim = int(_get(row, "claim", 0))
    gate = _get(row, "gate", "")
    if isinstance(gate, str) and gate and gate != "seeds":
        prefix = f"gated ({gate}): "
    else:
        prefix = ""
    if not _finite(est, lo, hi):
        return prefix + "no interval"
    margin = _get(row, "margin")
    scale = claim_of(claim).scale if claim in CLAIM_TABLE else "points"
    if scale == "margin":
        text = f"margin {est:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        return prefix + text + (f" (non-inferior down to −{margin:g})" if _finite(margin) else " (must be above 0)")
    if scale == "share" and _get(row, "kind", "") == "level":
        return prefix + (f"{100 * est:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] of reconstructions (more than "
                         f"{100 * _get(row, 'threshold', 0.5):.0f}% needed)")
    interval = f"{_pts(est, True)} [{_pts(lo, True)}, {_pts(hi, True)}]"
    verdict = str(_get(row, "verdict", ""))
    if verdict == "inconclusive" and not prefix and _finite(_get(row, "rules_out")):
        return f"no effect larger than {_pts(_get(row, 'rules_out'))} points ({interval})"
    return prefix + f"{interval} points"


def _rows_of(verdicts: pd.DataFrame, s) -> pd.DataFrame:
    """The ``verdicts.csv`` rows behind one summary row: its claim and dataset, under the
    summary's judge and attack where the claim is judged per judge or per attack."""
    claim = claim_of(s.claim)
    v = verdicts[(verdicts["claim"] == s.claim) & (verdicts["dataset"] == s.dataset)]
    if claim.per_judge:
        v = v[(v["judge"] == s.judge) & (v["attack"] == s.attack)]
    elif claim.per_attack and isinstance(s.attack, str) and s.attack:
        v = v[v["attack"] == s.attack]
    return v


def verdict_overview(verdict_summary: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per claim (untested claims say what the study lacks): the verdict, the effect
    each comparison finds or rules out, the smallest effect the design detects (80% power),
    and who judged it. The evidence column is HTML (one line per comparison)."""
    rows = []
    multi = verdict_summary["dataset"].nunique() > 1 if not verdict_summary.empty else False
    for s in verdict_summary.itertuples():
        v = _rows_of(verdicts, s)
        lines = "<br>".join(f"<b>{html.escape(r['comparison'])}</b>: {html.escape(verdict_effect(r))} "
                            f"({html.escape(r['verdict'])})" for r in v.to_dict("records"))
        who = _display(s.judge) + (f", {s.attack}" if isinstance(s.attack, str) and s.attack else "")
        mde = (f"{_pts(s.mde)} points" if claim_of(s.claim).scale == "points" else f"{s.mde:.3f}") if _finite(s.mde) \
            else "n/a"
        rows.append({**({"dataset": s.dataset} if multi else {}), "claim": f"{s.claim}. {s.claim_text}",
                     "verdict": s.verdict, "effect found or ruled out [95% CI]": lines,
                     "design detects (80% power)": mde, "judged by": who})
    tested = set(verdict_summary["claim"]) if not verdict_summary.empty else set()
    for claim in [c for c in CLAIM_TABLE if c.number not in tested]:
        rows.append({**({"dataset": ""} if multi else {}), "claim": f"{claim.number}. {claim.text}",
                     "verdict": "not tested", "effect found or ruled out [95% CI]": f"this study lacks {claim.needs}",
                     "design detects (80% power)": "", "judged by": ""})
    rows.sort(key=lambda r: int(r["claim"].split(".")[0]))
    return pd.DataFrame(rows)


def inconclusive_reasons(verdict_summary: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """Markdown: why each claim without a verdict either way has none, from its rows' notes."""
    lines = []
    for s in verdict_summary.itertuples():
        if s.verdict in ("supported", "not supported"):
            continue
        v = _rows_of(verdicts, s)
        reasons = [f"{r.comparison}: {r.note}" for r in v.itertuples()
                   if r.verdict != "supported" and isinstance(r.note, str) and r.note]
        if s.verdict == "inconclusive" and (v["verdict"] == "supported").any():
            reasons.insert(0, "not every comparison supports it (a claim needs all of them)")
        lines.append(f"- **Claim {s.claim}** ({s.claim_text}) is {s.verdict}: " + "; ".join(dict.fromkeys(reasons)) + ".")
    if not lines:
        return "Every tested claim got a verdict either way."
    return "Why some claims have no verdict either way:\n\n" + "\n".join(lines)


def claim_by_judge(verdicts: pd.DataFrame, claim: int = 1) -> pd.DataFrame:
    """Claim ``claim`` (an attack claim) under every judge and attack: the difference with its
    interval, p-value, what it rules out, the attack's leak against the reference (accuracy
    minus chance) and the verdict."""
    c = verdicts[verdicts["claim"] == claim].copy()
    if c.empty:
        return pd.DataFrame()
    order = [j.name for j in JUDGE_TABLE]
    c["_j"] = c["judge"].map(lambda j: order.index(j) if j in order else len(order))
    c = c.sort_values(["dataset", "attack", "_j"], kind="stable")
    leak = [f"{_pts(r.leak_estimate, True)} [{_pts(r.leak_ci_low, True)}, {_pts(r.leak_ci_high, True)}]"
            if _finite(getattr(r, "leak_estimate", np.nan), getattr(r, "leak_ci_low", np.nan),
                       getattr(r, "leak_ci_high", np.nan))
            else f"{_pts(r.leak_estimate, True)} (no interval: one seed)" if _finite(getattr(r, "leak_estimate", np.nan))
            else "n/a" for r in c.itertuples()]
    return pd.DataFrame({
        **({"dataset": c["dataset"]} if c["dataset"].nunique() > 1 else {}),
        "attack": c["attack"], "judge": [_display(j) for j in c["judge"]],
        "difference, points [95% CI]": [verdict_effect({**r, "verdict": "supported"}) for r in c.to_dict("records")],
        "p": [f"{p:.3f}" if _finite(p) else "n/a" for p in c["p_value"]],
        "leak: accuracy − chance (points)": leak,
        "verdict": c["verdict"], "why": [r.note if r.verdict != "supported" else "" for r in c.itertuples()],
    }).reset_index(drop=True)


def judge_ceiling_table(summary: pd.DataFrame, attack: str | None = None) -> pd.DataFrame:
    """Per judge: its ceiling (acceptance of held-out private images: what a perfect
    reconstruction scores), the attack's accuracy against no defense and its chance rate,
    all from ``summary.csv`` (``ceiling_<judge>_mean``)."""
    none = summary[summary["defense"] == "none"]
    if attack is not None:
        none = none[none["attack"] == attack]
    rows = []
    for judge in JUDGE_TABLE:
        col, chance_col, ceil = judge.accuracy, judge.chance, f"{judge.ceiling}_mean"
        if ceil not in none or none[ceil].isna().all():
            continue
        for r in none.itertuples():
            c, a = getattr(r, ceil), getattr(r, f"{col}_mean", np.nan)
            rows.append({"judge": judge.display, "attack": r.attack, "ceiling": round(float(c), 3),
                         "attack accuracy (none)": round(float(a), 3),
                         "chance": round(float(getattr(r, f"{chance_col}_mean", np.nan)), 3),
                         "share of the ceiling": round(float(a) / float(c), 2) if _finite(a, c) and c > 0 else np.nan})
    return pd.DataFrame(rows)


def conclusion_caveats(results: pd.DataFrame, summary: pd.DataFrame | None) -> str:
    """Markdown: what the verdicts rest on — the dataset, the targets' convergence, the judges'
    ceilings, the number of seeds."""
    lines = []
    datasets = list(results["dataset"].unique())
    if datasets != ["glyphs"]:
        k = int(results["n_classes_attacked"].max()) if "n_classes_attacked" in results else None
        lines.append(f"This run uses **{', '.join(datasets)}**, not the book's glyph benchmark"
                     + (f" ({k} classes attacked per seed)" if k else "") + ": its verdicts check the pipeline, "
                     "not the paper.")
    if summary is not None and "natural_accuracy_mean" in summary and "none" in set(summary["defense"]):
        nat = float(summary.loc[summary["defense"] == "none", "natural_accuracy_mean"].iloc[0])
        if nat < UNDERTRAINED:
            lines.append(f"The undefended targets reach {nat:.2f} natural accuracy on held-out characters of their "
                         f"fonts (below {UNDERTRAINED:.2f}): a defense's natural-accuracy cost (claim 2) is measured "
                         "at this budget.")
    ceilings = judge_ceilings_of(results)
    if ceilings:
        lines.append("The judges accept " + ", ".join(f"{v:.2f} ({_display(j)})" for j, v in ceilings.items())
                     + " of held-out private images: an attack accuracy reads against that ceiling, not against 1.")
    n_seeds = results["seed"].nunique()
    if n_seeds < MIN_SEEDS:
        lines.append(f"{n_seeds} seed{'s' if n_seeds > 1 else ''} only: with fewer than {MIN_SEEDS} seeds no claim "
                     "gets a verdict (an interval over seeds needs them).")
    lines.append(f"'Little' natural-accuracy cost means a drop of less than {100 * LITTLE_COST:.0f} points (the rules' "
                 "default margin; its reason is in the method chapter).")
    return " ".join(lines)
