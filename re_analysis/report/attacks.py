"""The attacks chapter: attack accuracy under every judge beside its chance rate and the
judge's ceiling, how the judges agree, the galleries and the distribution metrics.

Example:
    >>> import pandas as pd
    >>> r = pd.DataFrame({"attack": ["ppa", "gmi", "gmi"], "defense": ["none", "random-erasing", "none"]})
    >>> study_order(r)
    (['ppa', 'gmi'], ['none', 'random-erasing'])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics.judges import JUDGE_TABLE, judge_spec
from ..metrics.stats import identity_column
from ..notebook import (interval_means, budget_label, format_number, judges_present, with_interval,
                        with_spread)

__all__ = ["study_order", "accuracy_tables", "accuracy_figure", "judge_agreement", "judge_gap_text",
           "gallery_runs", "show_galleries", "GALLERY_CAPTION", "distribution_table"]

AGREEMENT = {"all_accept": "all judges accept", "eval_public": "open-set judge: a public identity",
             "pixel_nearest_public": "nearest training image is public"}
GALLERY_CAPTION = ("Leakage galleries of {attack}, seed {seed}: two reconstructions per class (at most eight classes), "
                   "each beside its nearest same-class private image (in pixels; in evaluation-model features) and its "
                   "nearest training image of any identity (PUBLIC in red: the attacker's own data, not a leak). "
                   "{marks}")


def gallery_marks() -> str:
    """What the letters on a leakage gallery mean (the judges with a ``mark``, in table order)."""
    marked = [j for j in JUDGE_TABLE if j.mark]
    return (f"{'/'.join(j.mark for j in marked)} +/−: the verdicts of the "
            + ", ".join(f"{j.display} ({j.mark})" for j in marked) + ".") if marked else ""


def study_order(results: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(attacks, defenses) in the order the study ran them, ``none`` first."""
    return list(dict.fromkeys(results["attack"])), list(dict.fromkeys(["none", *results["defense"]]))


def _sorted(table: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    attacks, defenses = study_order(results)
    key = table.assign(_a=table["attack"].map(attacks.index), _d=table["defense"].map(defenses.index))
    return key.sort_values(["_a", "_d"]).drop(columns=["_a", "_d"]).reset_index(drop=True)


def accuracy_tables(results: pd.DataFrame, summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """Per attack: (attack, table, HTML columns): attack accuracy [95% CI] under each judge
    with its chance rate and the judge's ceiling below it, and the budget each run used."""
    budget = (results.assign(budget=[budget_label(r) for r in results.to_dict("records")])
              .groupby(["attack", "defense"], sort=False)["budget"]
              .agg(lambda b: next((x for x in b if x.startswith("reduced")), b.iloc[0])))
    summary = _sorted(summary, results)
    judges = judges_present(summary)
    out = []
    for attack in study_order(results)[0]:
        part = summary[summary["attack"] == attack]
        table = pd.DataFrame({"defense": part["defense"].values})
        for j in judges:
            acc = with_interval(part, j).values
            spec = judge_spec(j)
            chance = part.get(f"{spec.chance}_mean", pd.Series([np.nan] * len(part)))
            ceiling = part.get(f"{spec.ceiling}_mean", pd.Series([np.nan] * len(part)))
            table[spec.display] = [f'<span style="white-space:nowrap">{a}</span><br><span style="color:#777;font-size:90%">'
                           f'chance {format_number(c)}' + (f", ceiling {format_number(e)}" if np.isfinite(e) else "")
                           + "</span>" for a, c, e in zip(acc, chance, pd.to_numeric(ceiling, errors="coerce"))]
        table["budget"] = [budget.get((attack, d), "n/a") for d in part["defense"]]
        out.append((attack, table, [judge_spec(j).display for j in judges]))
    return out


def accuracy_figure(results: pd.DataFrame, summary: pd.DataFrame):
    """Attack accuracy of each attack (panel) against each defense (row) under each judge
    (colour), with intervals and the chance rate (crosses); returns the figure (None
    without a judge)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    judges = judges_present(summary)
    if not judges:
        return None
    colors = dict(zip(judges, sns.color_palette("deep", len(judges))))
    atts, order = study_order(results)
    labels = [d for d in order if d in set(summary["defense"])]
    per_row = min(len(atts), 3)
    n_rows = int(np.ceil(len(atts) / per_row))
    fig, axes = plt.subplots(n_rows, per_row, figsize=(3.4 * per_row + 1.6, (0.42 * len(labels) + 1.0) * n_rows + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    for ax, attack in zip(axes.flat, atts):
        s = summary[summary["attack"] == attack].set_index("defense").reindex(labels)
        y = np.arange(len(labels))
        for k, j in enumerate(judges):
            spec = judge_spec(j)
            col, chance_col, name = spec.accuracy, spec.chance, spec.display
            off = (k - (len(judges) - 1) / 2) * 0.17
            m = s[f"{col}_mean"].to_numpy(dtype=float)
            lo = s[f"{col}_ci_low"].to_numpy(dtype=float) if f"{col}_ci_low" in s else np.full(len(s), np.nan)
            hi = s[f"{col}_ci_high"].to_numpy(dtype=float) if f"{col}_ci_high" in s else np.full(len(s), np.nan)
            err = [np.clip(np.nan_to_num(m - lo), 0, None), np.clip(np.nan_to_num(hi - m), 0, None)]
            ax.errorbar(m, y + off, xerr=err, fmt="o", ms=4, capsize=2, color=colors[j], label=name)
            if f"{chance_col}_mean" in s:
                ax.scatter(s[f"{chance_col}_mean"], y + off, marker="x", s=22, color=colors[j])
        ax.set_xlim(-0.03, 1.03)
        ax.set_title(attack, fontsize=11)
        ax.set_xlabel("attack accuracy")
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()
    for ax in list(axes.flat)[len(atts):]:
        ax.axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    handles.append(Line2D([], [], marker="x", color="0.3", linestyle="none"))
    names.append("chance baseline (same colour)")
    fig.tight_layout()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9, frameon=False)
    return fig


def judge_agreement(results: pd.DataFrame, judgements: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per attack and defense: the shares behind the judges' agreement with intervals —
    ``all_accept``, ``eval_public``, ``pixel_nearest_public``, ``closed_only`` (accepted by the
    closed-set judge only: the open-set answer is a public identity) and ``eval_not_robust``
    (accepted by the open-set judge, not the robust one) —, the displayed table)."""
    j = judgements.copy()
    if "hit_top1_closed" in j and "hit_top1" in j:
        j["closed_only"] = (j["hit_top1_closed"].astype(bool) & ~j["hit_top1"].astype(bool)).astype(float)
    if "hit_robust" in j and "hit_top1" in j:
        j["eval_not_robust"] = (j["hit_top1"].astype(bool) & ~j["hit_robust"].astype(bool)).astype(float)
    cols = [c for c in [*AGREEMENT, "closed_only", "eval_not_robust"] if c in j]
    agree = _sorted(interval_means(j, cols, ["attack", "defense"], unit=identity_column(j)), results)
    table = agree[["attack", "defense"]].copy()
    for c, name in AGREEMENT.items():
        if f"{c}_mean" in agree:
            table[name] = with_interval(agree, c).values
    return agree, table


def _pct(x) -> str:
    return "n/a" if pd.isna(x) else f"{100 * x:.0f}%"


def judge_gap_text(agree: pd.DataFrame, summary: pd.DataFrame, attacks: list[str]) -> str:
    """Markdown: per attack without defense, what each judge accepts and what separates them
    (closed-set-only acceptances, open-set but not robust ones)."""
    paras = []
    for attack in attacks:
        a = agree[agree["attack"] == attack].set_index("defense")
        s = summary[summary["attack"] == attack].set_index("defense")
        if "none" not in a.index or "none" not in s.index:
            continue
        ra, rs = a.loc["none"], s.loc["none"]
        text = [f"**{attack}, no defense.**"]
        if "attack_accuracy_top1_closed_mean" in s and "attack_accuracy_top1_mean" in s:
            text.append(f"The closed-set judge, the field's standard, accepts {_pct(rs['attack_accuracy_top1_closed_mean'])} "
                        f"of the reconstructions; the open-set judge accepts {_pct(rs['attack_accuracy_top1_mean'])}"
                        + (f", the robust judge {_pct(rs['attack_accuracy_robust_mean'])}" if "attack_accuracy_robust_mean"
                           in s and pd.notna(rs["attack_accuracy_robust_mean"]) else "")
                        + (f" and the pixel judge {_pct(rs['attack_accuracy_pixel_mean'])}" if "attack_accuracy_pixel_mean"
                           in s else "") + ".")
        if "closed_only_mean" in a:
            co = ra["closed_only_mean"]
            text.append(f"{_pct(co)} of the reconstructions pass the closed-set judge only: the open-set judge's top "
                        "answer for them is a public identity (were it a private one, the closed-set argmax would agree "
                        "with it). The standard protocol counts them as leaks although the image looks more like an "
                        "identity of the attacker's own public data." if co > 0 else
                        "No reconstruction passes the closed-set judge alone: here the standard protocol and the "
                        "open-set judge agree.")
        if "eval_not_robust_mean" in a and pd.notna(ra["eval_not_robust_mean"]):
            enr = ra["eval_not_robust_mean"]
            text.append(f"{_pct(enr)} pass the open-set judge but not the robust one: images that carry features a "
                        "standard network keys on without convincing a network trained against adversarial "
                        "perturbations — the signature of Type-I adversarial reconstructions (Ho et al., 2025), not of "
                        "recovered identity." if enr > 0 else
                        "Every reconstruction the open-set judge accepts also passes the robust judge.")
        if "all_accept_mean" in a:
            text.append(f"All judges agree on {_pct(ra['all_accept_mean'])}: the share of reconstructions no judge doubts.")
        paras.append(" ".join(text))
    if not paras:
        return "No attack was run without defense, so the judges' gap has no reference here."
    return "\n\n".join(paras)


def gallery_runs(results: pd.DataFrame, run_dir: str | Path, re_label: str | None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(the first seed's runs of none and RE, those of the other defenses, that seed), each
    with ``path``: the attack run folder whose ``gallery.png`` the chapter shows."""
    from ..notebook import attack_dirs

    runs = attack_dirs(results, run_dir)
    main = [d for d in ["none", re_label] if d]
    return runs[runs["defense"].isin(main)], runs[~runs["defense"].isin(main)], int(runs["seed"].iloc[0])


def distribution_table(summary: pd.DataFrame) -> pd.DataFrame:
    """KNN distance, FID and PRDC per attack and defense (mean ± sd over seeds)."""
    table = summary[["attack", "defense"]].copy()
    for col, name, digits in (("knn_distance", "KNN distance", 1), ("fid", "FID", 1), ("precision", "precision", 2),
                              ("recall", "recall", 2), ("density", "density", 2), ("coverage", "coverage", 2)):
        if f"{col}_mean" in summary:
            table[name] = with_spread(summary, col, digits).values
    if "fid_n_reconstructions_mean" in summary:
        table["FID n"] = [format_number(v, 0) for v in summary["fid_n_reconstructions_mean"]]
    return table


def show_galleries(rows: pd.DataFrame, seed: int, run_dir: str | Path, preset: str | None) -> int:
    """Display the ``gallery.png`` of each run in ``rows`` (one figure per attack, captioned);
    returns how many were shown."""
    from ..notebook import show_images

    return sum(show_images([(r.path / "gallery.png", r.defense) for r in group.itertuples()],
                           GALLERY_CAPTION.format(attack=attack, seed=seed, marks=gallery_marks()), run_dir, preset)
               for attack, group in rows.groupby("attack", sort=False))
