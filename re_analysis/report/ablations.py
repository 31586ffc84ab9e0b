"""The ablations chapter: Partial Erasure, Random Location, erased area, RE with other defenses.

Reads the study's tables and the verdicts (no comparison is recomputed here: each row shows
what ``verdicts.csv`` decided, with the arms' natural accuracies and, for every Random
Erasing variant, how much of the glyphs its boxes hid in training).

Example:
    >>> ablation_groups(["none", "random-erasing", "re-partial-p0.5", "re-partial-boxes"])[0]
    ('Partial Erasure', 're-partial-p0.5', 'random-erasing', 5)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.judges import PRIMARY_JUDGE, judge_spec
from ..verdicts import CLAIM_TABLE, Roles, roles_for

__all__ = ["ablation_groups", "ablation_labels", "ablation_table", "ablation_sentences", "ablation_figure"]


def ablation_groups(labels, names: dict | None = None, roles: Roles | None = None) -> list[tuple[str, str, str, int | None]]:
    """(ablation, variant, reference, claim) for every ablation a study's defense labels hold,
    by the roles they play (``roles``: the study's own, :func:`re_analysis.runs.study_roles`;
    default: each defense's registered role)."""
    names = names or {}
    roles = roles or roles_for(labels, names)
    if not roles.re:
        return []
    area = [d for d in labels if names.get(d, d) == "random-erasing" and d != roles.re]
    groups = [("Partial Erasure", d, roles.re, 5) for d in roles.partial]
    groups += [("Partial Erasure", d, c, 5) for d in roles.partial for c in roles.partial_control]
    groups += [("Random Location", d, roles.re, 6) for d in roles.location]
    groups += [("erased area", d, roles.re, None) for d in area]
    groups += [("RE + baseline", comp, base, 8) for base, comp in roles.compositions.items()]
    return groups


def _interval(row: pd.Series, column: str) -> str:
    from ..notebook import with_interval

    return with_interval(row.to_frame().T, column).iloc[0]


def _share(results: pd.DataFrame, label: str, column: str) -> float:
    if column not in results:
        return np.nan
    v = pd.to_numeric(results.loc[results["defense"] == label, column], errors="coerce")
    return float(v.mean()) if v.notna().any() else np.nan


def ablation_table(results: pd.DataFrame, summary: pd.DataFrame, verdicts: pd.DataFrame | None,
                   judge: str = PRIMARY_JUDGE, roles: Roles | None = None) -> pd.DataFrame:
    """One row per ablation, attack and reference: the variant's natural and attack accuracy
    with intervals, the paired difference to the reference and its verdict from
    ``verdicts.csv`` (with the natural-accuracy difference the utility check read), and the
    share of ink its boxes hid in training (``foreground_erased_share``, per target)."""
    from ..notebook import format_interval

    names = dict(zip(results["defense"], results["defense_name"]))
    rows = []
    s = summary.set_index(["attack", "defense"])
    for attack in dict.fromkeys(results["attack"]):
        for ablation, variant, reference, claim in ablation_groups(list(names), names, roles):
            if (attack, variant) not in s.index:
                continue
            one = s.loc[(attack, variant)]
            v = pd.DataFrame()
            if verdicts is not None and claim is not None:
                v = verdicts[(verdicts["claim"] == claim) & (verdicts["attack"] == attack) & (verdicts["judge"] == judge)
                             & (verdicts["comparison"] == f"{variant} vs {reference}")]
            r = v.iloc[0] if len(v) else None
            nat_diff = ""
            if r is not None and "natural_estimate" in r and np.isfinite(r["natural_estimate"]):
                nat_diff = format_interval(r["natural_estimate"], r["natural_ci_low"], r["natural_ci_high"], signed=True)
            ink = _share(results, variant, "foreground_erased_share")
            rows.append({"ablation": ablation, "variant": variant, "reference": reference, "attack": attack,
                         "natural accuracy": _interval(one, "natural_accuracy"),
                         "attack accuracy": _interval(one, judge),
                         "difference to the reference": format_interval(r["estimate"], r["ci_low"], r["ci_high"],
                                                                        signed=True) if r is not None else "n/a",
                         "natural: protected arm − leaking arm": nat_diff or "n/a",
                         "ink erased in training": f"{100 * ink:.0f}%" if np.isfinite(ink) else "",
                         "verdict": r["verdict"] if r is not None else "(no claim)"})
    return pd.DataFrame(rows)


def ablation_sentences(verdicts: pd.DataFrame, judge: str = PRIMARY_JUDGE) -> str:
    """Markdown: each comparison of the claims this chapter discusses (5, 6 and 8: their
    ``chapter``) with its verdict and, where there is one, the reason from its note."""
    from ..notebook import difference_sentence

    lines = []
    for claim in [c for c in CLAIM_TABLE if c.chapter == "ablations"]:
        v = verdicts[(verdicts["claim"] == claim.number) & (verdicts["judge"] == judge)]
        if v.empty:
            continue
        lines.append(f"\n**Claim {claim.number}, {claim.text}.**\n")
        for r in v.itertuples():
            note = r.note if isinstance(r.note, str) and r.note else ""
            lines.append(f"- {r.comparison}, {r.attack}: "
                         + difference_sentence(r.estimate, r.ci_low, r.ci_high, "the difference in attack accuracy")
                         + f"; verdict **{r.verdict}**" + (f" ({note})" if note else "") + ".")
    return "\n".join(lines) if lines else "verdicts.csv holds no verdict on claims 5, 6 or 8."


def ablation_labels(labels, groups) -> list[str]:
    """The arms the ablations chapter plots, in order: no defense, Random Erasing, each
    ablation's reference and the ablations themselves (only those the study ran); without
    ablations, the two reference arms alone.

    Example:
        >>> ablation_labels(["none", "random-erasing", "re-fixed-corner"],
        ...                 [(6, "re-fixed-corner", "random-erasing", None)])
        ['none', 'random-erasing', 're-fixed-corner']
    """
    wanted = ["none", "random-erasing", *[g[2] for g in groups], *[g[1] for g in groups]]
    return [lab for lab in dict.fromkeys(wanted) if lab in set(labels)]


def ablation_figure(summary: pd.DataFrame, labels: list[str], attacks: list[str], judge: str = PRIMARY_JUDGE):
    """Natural accuracy (left) and attack accuracy per attack of ``labels``, means with their
    95% intervals; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attacks) + 1, figsize=(3.6 * (len(attacks) + 1) + 1.5, 0.42 * len(labels) + 1.4),
                             squeeze=False, sharey=True)

    def bars(ax, table, mean_col, column, color):
        for i, lab in enumerate(labels):
            row = table[table["defense"] == lab]
            if row.empty:
                continue
            m = float(row[mean_col].iloc[0])
            lo = float(row[f"{column}_ci_low"].iloc[0]) if f"{column}_ci_low" in row else np.nan
            hi = float(row[f"{column}_ci_high"].iloc[0]) if f"{column}_ci_high" in row else np.nan
            # the mean of a summary row and its interval may come from different tables: never a negative bar
            err = [[max(0.0, np.nan_to_num(m - lo))], [max(0.0, np.nan_to_num(hi - m))]]
            ax.errorbar(m, i, xerr=err, fmt="o", ms=5, capsize=2, color=color)

    bars(axes[0][0], summary.drop_duplicates("defense"), "natural_accuracy_mean", "natural_accuracy", "0.35")
    axes[0][0].set_title("natural accuracy", fontsize=10)
    for ax, attack in zip(axes[0][1:], attacks):
        acc = judge_spec(judge).accuracy
        bars(ax, summary[summary["attack"] == attack], f"{acc}_mean", acc, "#1f77b4")
        ax.set_title(f"attack accuracy, {attack}", fontsize=10)
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    return fig
