"""The privacy-utility chapter: each defense's attack-accuracy and natural-accuracy drops
against no defense, with intervals, ranked by their trade-off; every judge's comparisons.

Example:
    >>> drop_interval({"difference": -0.12, "ci_low": -0.2, "ci_high": -0.04})
    '+12.0 [+4.0, +20.0]'
"""

from __future__ import annotations

import pandas as pd

from ..metrics.judges import JUDGE_TABLE, PRIMARY_JUDGE, judge_spec
from ..notebook import format_interval, format_number

__all__ = ["drop_interval", "tradeoff_table", "tradeoff_figure", "judge_comparisons"]


def drop_interval(row) -> str:
    """A defense-minus-none difference (a fraction) as a drop in points with its interval."""
    if row is None:
        return "n/a"
    return format_interval(-100 * row["difference"], -100 * row["ci_high"], -100 * row["ci_low"], digits=1, signed=True)


def _paired(comparisons: pd.DataFrame | None) -> tuple[dict, dict]:
    cmp = comparisons if comparisons is not None else pd.DataFrame(columns=["attack", "defense", "judge"])
    att = {(r["attack"], r["defense"]): r for r in cmp[cmp["judge"] == PRIMARY_JUDGE].to_dict("records")}
    nat = {r["defense"]: r for r in cmp[cmp["judge"] == "natural accuracy"].to_dict("records")}
    return att, nat


def tradeoff_table(tradeoff: pd.DataFrame, comparisons: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """(the ranking per attack with both drops and their intervals, the Markdown that reads
    whether the top of each ranking is measurable)."""
    att, nat = _paired(comparisons)
    rows, lines = [], []
    for attack, t in tradeoff.groupby("attack", sort=False):
        for rank, r in enumerate(t.itertuples(), 1):
            rows.append({"attack": attack, "rank": rank, "defense": r.defense,
                         "attack-accuracy drop (points)": drop_interval(att.get((attack, r.defense))),
                         "natural-accuracy drop (points)": drop_interval(nat.get(r.defense)),
                         "trade-off": format_number(r.tradeoff, 1)})
        best = t.iloc[0]
        a = att.get((attack, best.defense))
        head = f"{best.defense} is the only defense compared" if len(t) == 1 else f"{best.defense} ranks first"
        text = (f"- **{attack}**: {head} (trade-off {format_number(best.tradeoff, 1)}: an attack-accuracy drop of "
                f"{best.attack_acc_drop:+.1f} points for a natural-accuracy drop of {best.natural_acc_drop:+.1f})")
        if a is None:
            text += "; its paired comparison is missing, so the ranking has no interval."
        elif a["ci_high"] < 0:
            text += f"; its attack-accuracy drop, {drop_interval(a)} points, is measurable."
        elif a["ci_low"] > 0:
            text += f"; it *raises* attack accuracy measurably ({drop_interval(a)} points of drop)."
        else:
            text += (f"; its attack-accuracy change, {drop_interval(a)} points, covers zero: no measurable difference"
                     + (", so the top of the ranking rests on noise." if len(t) > 1 else "."))
        lines.append(text)
    return pd.DataFrame(rows), "\n".join(lines)


def tradeoff_figure(tradeoff: pd.DataFrame, comparisons: pd.DataFrame):
    """Per attack: each defense's natural-accuracy drop (x) and attack-accuracy drop (y) with
    their intervals, in points."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    att, nat = _paired(comparisons)
    atts = list(dict.fromkeys(tradeoff["attack"]))
    labels = list(dict.fromkeys(tradeoff["defense"]))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    fig, axes = plt.subplots(1, len(atts), figsize=(5.2 * len(atts), 4.4), squeeze=False)
    for ax, attack in zip(axes[0], atts):
        for r in tradeoff[tradeoff["attack"] == attack].itertuples():
            a, n = att.get((attack, r.defense)), nat.get(r.defense)
            if a is None or n is None:
                continue
            x, y = -100 * n["difference"], -100 * a["difference"]
            ax.errorbar(x, y, xerr=[[x + 100 * n["ci_high"]], [-100 * n["ci_low"] - x]],
                        yerr=[[y + 100 * a["ci_high"]], [-100 * a["ci_low"] - y]], fmt="o", ms=5, capsize=2,
                        color=palette[r.defense])
            ax.annotate(r.defense, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title(attack)
        ax.set_xlabel("natural-accuracy drop (points)")
        ax.set_ylabel("attack-accuracy drop (points)")
    fig.tight_layout()
    return fig


def judge_comparisons(comparisons: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(every defense against none under every judge, the Markdown count under the primary judge)."""
    c = comparisons[comparisons["judge"] != "natural accuracy"].copy()
    order = [j.name for j in JUDGE_TABLE]
    c["_j"] = c["judge"].map(lambda j: order.index(j) if j in order else len(order))
    c = c.sort_values(["attack", "_j"], kind="stable")
    table = pd.DataFrame({
        "attack": c["attack"], "defense": c["defense"],
        "judge": [judge_spec(j).display if j in order else j for j in c["judge"]],
        "defense − none [95% CI]": [format_interval(r.difference, r.ci_low, r.ci_high, signed=True) for r in c.itertuples()],
        "p": [f"{p:.3f}" for p in c["p_value"]], "verdict": c["verdict"]}).reset_index(drop=True)
    primary = c[c["judge"] == PRIMARY_JUDGE]
    if primary.empty:
        return table, ""
    groups = {v: primary[primary["verdict"] == v] for v in ("lower", "no measurable difference", "higher")}

    def names(rows):
        return ", ".join(f"{r.defense} vs {r.attack}" for r in rows.itertuples())

    text = (f"Under the primary judge, {len(groups['lower'])} of {len(primary)} defense/attack pairs lower attack "
            "accuracy measurably" + (f" ({names(groups['lower'])})" if len(groups["lower"]) else "")
            + f"; {len(groups['no measurable difference'])} show no measurable difference from no defense"
            + (f" ({names(groups['no measurable difference'])})" if len(groups["no measurable difference"]) else "")
            + (f"; {len(groups['higher'])} raise it ({names(groups['higher'])})" if len(groups["higher"]) else "") + ".")
    return table, text
