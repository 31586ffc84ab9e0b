"""The training chapter: each defended target's natural accuracy against no defense, the
judges' own quality, the privacy budget of DP-SGD targets and the training curves.

Example:
    >>> import pandas as pd
    >>> r = pd.DataFrame({"defense": ["bido", "none"], "seed": [0, 0], "epsilon": [float("nan")] * 2})
    >>> privacy_table(r) is None
    True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..notebook import format_interval, format_number, run_path, with_interval
from ..runs import run_record

__all__ = ["natural_accuracy", "natural_accuracy_figure", "judges_table", "privacy_table", "training_curves"]


def natural_accuracy(results: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame | None
                     ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(the summary's rows of each defense in study order, the displayed table — natural
    accuracy [95% CI], its change against none [95% CI] —, the paragraph that reads it)."""
    targets = results.drop_duplicates(["defense", "seed"])
    order = list(dict.fromkeys(["none", *targets["defense"]]))
    nat = summary.drop_duplicates("defense").set_index("defense")
    nat = nat.loc[[d for d in order if d in nat.index]].reset_index()
    change, c = {}, pd.DataFrame()
    if comparisons is not None:
        c = comparisons[comparisons["judge"] == "natural accuracy"]
        change = {r.defense: format_interval(r.difference, r.ci_low, r.ci_high, signed=True) for r in c.itertuples()}
    names = targets.drop_duplicates("defense").set_index("defense")
    what = [f"{names.loc[d, 'defense_name']}" + (f" {names.loc[d, 'defense_params']}"
            if isinstance(names.loc[d, "defense_params"], str) and names.loc[d, "defense_params"] else "")
            for d in nat["defense"]]
    table = pd.DataFrame({"defense": nat["defense"], "what it is": what,
                          "natural accuracy [95% CI]": with_interval(nat, "natural_accuracy").values,
                          "change vs none [95% CI]": [change.get(d, "(baseline)" if d == "none" else "n/a")
                                                      for d in nat["defense"]],
                          "seeds": nat["n_seeds"].astype(int).values})
    if (table["what it is"] == table["defense"]).all():
        table = table.drop(columns="what it is")
    lines = [f"Without defense the target reaches {with_interval(nat[nat.defense == 'none'], 'natural_accuracy').iloc[0]}."]
    if len(c):
        lower = [r.defense for r in c.itertuples() if r.ci_high < 0]
        same = [r.defense for r in c.itertuples() if r.ci_low <= 0 <= r.ci_high]
        higher = [r.defense for r in c.itertuples() if r.ci_low > 0]
        if lower:
            worst = c.loc[c["difference"].idxmin()]
            lines.append(f"Measurably lower natural accuracy: {', '.join(lower)}; the largest cost is {worst.defense}'s, "
                         f"{format_interval(worst.difference, worst.ci_low, worst.ci_high, signed=True)}.")
        if same:
            lines.append(f"No measurable difference from no defense: {', '.join(same)}.")
        if higher:
            lines.append(f"Measurably higher: {', '.join(higher)}.")
    return nat, table, " ".join(lines)


def natural_accuracy_figure(nat: pd.DataFrame, results: pd.DataFrame):
    """Mean natural accuracy per defense with its interval, and each seed as a grey dot."""
    import matplotlib.pyplot as plt

    targets = results.drop_duplicates(["defense", "seed"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(nat) + 1.2))
    y = np.arange(len(nat))
    m = nat["natural_accuracy_mean"].to_numpy()
    lo = nat.get("natural_accuracy_ci_low", pd.Series(np.nan, index=nat.index)).to_numpy()
    hi = nat.get("natural_accuracy_ci_high", pd.Series(np.nan, index=nat.index)).to_numpy()
    ax.errorbar(m, y, xerr=[np.clip(np.nan_to_num(m - lo), 0, None), np.clip(np.nan_to_num(hi - m), 0, None)],
                fmt="o", color="#1f77b4", capsize=3, label="mean, 95% interval")
    per_seed = targets.set_index("defense")
    for i, d in enumerate(nat["defense"]):
        v = per_seed.loc[[d], "natural_accuracy"].to_numpy()
        ax.scatter(v, np.full(len(v), i + 0.18), s=12, color="0.4", label="one seed" if i == 0 else None)
    ax.set_yticks(y, nat["defense"])
    ax.set_ylim(len(nat) - 0.4, -0.6)
    ax.set_xlabel("natural accuracy (private test split)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return fig


def judges_table(results: pd.DataFrame, run_dir: str | Path) -> tuple[pd.DataFrame, str]:
    """(each judge's architecture, accuracy on held-out private images over all identities and
    over the private ones, accuracy under PGD; the paragraph that reads it)."""
    first = results.iloc[0]
    record = run_record(run_path(run_dir, first.attack_dir), "metrics.json", default={})

    def get(key):
        return record.get(key, first.get(key, np.nan))

    rows = [("open-set evaluation model", get("eval_arch"), get("eval_natural_accuracy"),
             get("eval_natural_accuracy_closed"), np.nan),
            ("robust evaluation model", get("robust_arch"), get("robust_natural_accuracy"),
             get("robust_natural_accuracy_closed"), get("robust_pgd_accuracy"))]
    judges = pd.DataFrame(rows, columns=["judge", "architecture", "accuracy (all identities)", "accuracy (private only)",
                                         "accuracy under PGD"])
    judges = judges[pd.to_numeric(judges["accuracy (all identities)"], errors="coerce").notna()]
    if judges.empty:
        return judges, ("The results record no accuracy of the judges (results.csv columns `eval_natural_accuracy`, "
                        "`robust_natural_accuracy` are empty).")
    for c in ("accuracy (all identities)", "accuracy (private only)"):
        judges[c] = [format_number(v) for v in judges[c]]
    eps = get("robust_pgd_eps")
    judges["accuracy under PGD"] = [format_number(v) + (f" (eps {float(eps):.3g})" if pd.notna(eps) else "")
                                    if pd.notna(v) else "not measured" for v in judges["accuracy under PGD"]]
    judges["architecture"] = [a if isinstance(a, str) else "n/a" for a in judges["architecture"]]
    text = ["Accuracies are on the private test images; \"all identities\" is top-1 over the private and public "
            "identities (what the open-set judge does with a reconstruction), \"private only\" the closed-set argmax."]
    tarch = record.get("target_arch")
    if tarch and pd.notna(get("eval_arch")):
        text.append(f"The targets are `{tarch}`; the evaluation models are `{get('eval_arch')}`, another architecture.")
    e, r, p = get("eval_natural_accuracy"), get("robust_natural_accuracy"), get("robust_pgd_accuracy")
    if pd.notna(e):
        text.append(f"The open-set evaluation model names the right identity for {100 * e:.0f}% of held-out private "
                    "images: that is its ceiling, what a perfect reconstruction would score.")
    if pd.notna(r) and pd.notna(e):
        text.append(f"The robust judge is {'less' if r < e else 'no less'} accurate on clean images ({100 * r:.0f}% vs "
                    f"{100 * e:.0f}%)" + (f" and keeps {100 * p:.0f}% under PGD" if pd.notna(p) else "")
                    + ("; part of what it rejects is its own error, for every defense alike, so compare defenses "
                       "under the same judge." if r < e else "."))
    elif pd.isna(r):
        text.append("This study has no robust judge.")
    start, ep = get("robust_finetuned_from_accuracy"), get("robust_pgd_train_epochs")
    if pd.notna(r) and pd.notna(start):
        text.append(f"It is the open-set judge ({100 * start:.0f}% before) fine-tuned adversarially"
                    + (f" for {int(ep)} epoch{'s' if int(ep) != 1 else ''}" if pd.notna(ep) else "")
                    + ": on a CPU budget, training a robust judge from random weights leaves it near chance.")
    return judges, " ".join(text)


def privacy_table(results: pd.DataFrame) -> pd.DataFrame | None:
    """(epsilon, delta) of every DP-SGD target (RDP bound, and the tighter PRV one where
    recorded), mean over seeds; None when no target trains with DP-SGD."""
    dp = results.drop_duplicates(["defense", "seed"])
    dp = dp[pd.to_numeric(dp["epsilon"], errors="coerce").notna()] if "epsilon" in dp else dp.iloc[0:0]
    if dp.empty:
        return None
    g = dp.groupby("defense", sort=False)
    return pd.DataFrame({"defense": list(g.groups), "epsilon (RDP, mean over seeds)": [format_number(v) for v in
                                                                                      g["epsilon"].mean()],
                         "delta": [f"{v:.1e}" for v in g["delta"].mean()]})


def training_curves(results: pd.DataFrame, run_dir: str | Path):
    """Training loss and accuracy per epoch of each defended target (mean ± sd over seeds);
    the loss is drawn on a log scale unless a defense's loss goes negative (BiDO rewards
    dependence on the labels). Returns (figure, number of seeds), or (None, 0) without history."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    targets = results.drop_duplicates(["defense", "seed"])
    order = list(dict.fromkeys(["none", *targets["defense"]]))
    rows = []
    for _, r in targets.iterrows():
        m = run_record(run_path(run_dir, r.target_dir), "metrics.json", default={})
        rows += [{"defense": r.defense, "seed": r.seed, **h} for h in m.get("history", [])]
    curves = pd.DataFrame(rows)
    if curves.empty:
        return None, 0
    cols = [c for c in ("loss", "train_accuracy") if c in curves]
    fig, axes = plt.subplots(1, len(cols), figsize=(5.2 * len(cols), 3.4), squeeze=False)
    for ax, col in zip(axes[0], cols):
        sns.lineplot(data=curves, x="epoch", y=col, hue="defense", hue_order=order, errorbar="sd", marker="o",
                     ax=ax, legend=col == cols[-1])
        if col == "loss" and (curves[col] > 0).all():
            ax.set_yscale("log")
        ax.set_ylabel(col.replace("_", " "))
        ax.xaxis.get_major_locator().set_params(integer=True)
    if cols:
        axes[0][-1].legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig, int(curves.seed.nunique())
