"""The feature-space chapter: how far reconstructions lie from private and erased features
(claim 3), whether private identities stay apart (claim 4), and the UMAP figures.

Example:
    >>> import pandas as pd
    >>> r = pd.DataFrame({"dataset": ["g"], "defense": ["none"], "attack": ["gmi"], "seed": [0],
    ...                   "mean_dist_private": [10.0], "mean_dist_private_normalized": [2.0]})
    >>> g = pd.DataFrame({"dataset": ["g"], "defense": ["none"], "attack": ["gmi"], "seed": [0], "label": [1],
    ...                   "d_private": [4.0], "d_erased": [6.0], "nearer_erased": [0.0]})
    >>> normalized_gap(g, r)[["private", "erased"]].values.tolist()
    [[0.8, 1.2]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..notebook import attack_dirs, interval_means, difference_sentence, format_interval, with_interval, with_spread
from ..runs import run_record
from ..verdicts import CLAIM_TABLE

__all__ = ["normalized_gap", "gap_table", "gap_figure", "claim3_text", "separation_table", "claim4_text",
           "feature_space_figures"]

KEYS = ["dataset", "defense", "attack", "seed"]


def _order(results: pd.DataFrame) -> tuple[list[str], list[str]]:
    return list(dict.fromkeys(results["attack"])), list(dict.fromkeys(["none", *results["defense"]]))


def normalized_gap(gap: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """``gap_samples.csv`` with ``private`` and ``erased``: each reconstruction's squared
    distance to its nearest private / erased feature in units of its target's own scale
    (raw distances where the results record no normalised ones; ``scale`` says which)."""
    r = results.set_index(KEYS)
    out = gap.copy()
    if "mean_dist_private_normalized" in r and r["mean_dist_private_normalized"].notna().all():
        out = out.join((r["mean_dist_private"] / r["mean_dist_private_normalized"]).rename("scale"), on=KEYS)
    else:
        out["scale"] = np.nan
    unit = out["scale"].fillna(1.0)
    out["private"], out["erased"] = out["d_private"] / unit, out["d_erased"] / unit
    return out


def gap_table(gap: pd.DataFrame, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(per attack and defense: the mean distances and the share nearer erased with intervals
    over identities; the displayed table, with each defense's share against none; whether the
    distances are normalised)."""
    from ..verdicts import paired

    attacks, order = _order(results)
    g_all = normalized_gap(gap, results)
    normalized = bool(g_all["scale"].notna().all())
    g = interval_means(g_all, ["private", "erased", "nearer_erased"], ["attack", "defense"], unit="label")
    g = g.assign(_a=g["attack"].map(attacks.index), _d=g["defense"].map(order.index)).sort_values(["_a", "_d"])
    g = g.drop(columns=["_a", "_d"]).reset_index(drop=True)
    vs = {(a, d): paired(g_all[g_all["attack"] == a], "nearer_erased", d, "none")
          for a, d in zip(g["attack"], g["defense"]) if d != "none"}
    tag = "norm." if normalized else "raw"
    table = pd.DataFrame({
        "attack": g["attack"], "defense": g["defense"],
        f"distance to private ({tag})": with_interval(g, "private").values,
        f"distance to erased ({tag})": with_interval(g, "erased").values,
        "nearer erased": with_interval(g, "nearer_erased").values,
        "nearer erased, vs none": ["(baseline)" if d == "none" else
                                   format_interval(vs[a, d]["difference"], vs[a, d]["ci_low"], vs[a, d]["ci_high"],
                                                   signed=True) if vs.get((a, d)) else "n/a"
                                   for a, d in zip(g["attack"], g["defense"])]})
    return g, table, normalized


def gap_figure(g: pd.DataFrame, normalized: bool):
    """Left: the distance of reconstructions to private (blue) and erased (orange) features;
    right: the share nearer an erased feature (dashed: one half). One row per attack."""
    import matplotlib.pyplot as plt

    atts = list(dict.fromkeys(g["attack"]))
    n_def = g.groupby("attack")["defense"].nunique().max()
    fig, axes = plt.subplots(len(atts), 2, figsize=(11, (0.42 * n_def + 1.3) * len(atts)), squeeze=False)
    colors = {"private": "#1f77b4", "erased": "#ff7f0e"}

    def bars(ax, s, col, y, color, label=None):
        m, lo, hi = (s[f"{col}_mean"].to_numpy(float), s[f"{col}_ci_low"].to_numpy(float),
                     s[f"{col}_ci_high"].to_numpy(float))
        ax.errorbar(m, y, xerr=[np.clip(np.nan_to_num(m - lo), 0, None), np.clip(np.nan_to_num(hi - m), 0, None)],
                    fmt="o", ms=4, capsize=2, color=color, label=label)

    for (ax_d, ax_f), attack in zip(axes, atts):
        s = g[g["attack"] == attack].reset_index(drop=True)
        y = np.arange(len(s))
        for k, col in enumerate(["private", "erased"]):
            bars(ax_d, s, col, y + (k - 0.5) * 0.25, colors[col], f"to nearest {col}")
        bars(ax_f, s, "nearer_erased", y, "#d62728")
        ax_f.axvline(0.5, color="0.3", ls="--", lw=1)
        ax_f.set_xlim(-0.03, 1.03)
        for ax in (ax_d, ax_f):
            ax.set_yticks(y, s["defense"])
            ax.invert_yaxis()
        ax_f.set_yticklabels([])
        ax_d.set_title(f"{attack}: distance of reconstructions", fontsize=10)
        ax_f.set_title(f"{attack}: share nearer an erased feature", fontsize=10)
        ax_d.set_xlabel("squared L2 distance" + (" / target's own scale" if normalized else " (raw)"))
        ax_f.set_xlabel("share of reconstructions")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def claim3_text(verdicts: pd.DataFrame) -> str | None:
    """Markdown: claim 3 per attack — RE's share of reconstructions nearer an erased feature
    against one half, then against each control — or None when the verdicts hold no claim 3 row."""
    rows = verdicts[verdicts["claim"].isin([c.number for c in CLAIM_TABLE if c.measure == "gap"])]
    if rows.empty:
        return None
    lines = []
    for r in rows.itertuples():
        accepted = getattr(r, "accepted_estimate", np.nan)
        if " vs " in r.comparison:
            control = r.comparison.split(" vs ")[-1]
            text = (f"- **{r.attack}**, against {control}: "
                    + difference_sentence(r.estimate, r.ci_low, r.ci_high, f"the share nearer erased, RE minus {control}"))
            if np.isfinite(accepted):
                text += f" (among the reconstructions the targets accept: {accepted:+.2f})"
        else:
            text = (f"- **{r.attack}**, under RE: {format_interval(r.estimate, r.ci_low, r.ci_high)} of all reconstructions "
                    "lie nearer an erased than a private feature (the claim needs more than one half)")
            if np.isfinite(accepted):
                text += f"; among those the target accepts {accepted:.2f}"
        lines.append(text + f". Verdict: **{r.verdict}**.")
    return "\n".join(lines)


def separation_table(separation: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Per defense: the class-separation margin of the private training features and of the
    held-out test features (against the training features), each with its interval and the
    training margin against none, and nearest-neighbour purity and silhouette (± sd)."""
    from ..verdicts import paired

    _, order = _order(results)
    held_out = separation[separation["split"] == "test"] if "split" in separation else separation.iloc[:0]
    train = separation[separation["split"] == "train"] if "split" in separation else separation
    sep = interval_means(train, ["margin"], ["defense"])
    sep = sep.assign(_d=sep["defense"].map(lambda d: order.index(d) if d in order else len(order))).sort_values("_d")
    held = interval_means(held_out, ["margin"], ["defense"]).set_index("defense") if len(held_out) else None
    per_target = results.drop_duplicates(["defense", "seed"]).groupby("defense", sort=False)
    spread = pd.DataFrame({f"{c}_mean": per_target[f"separation_{c}"].mean() for c in ("nn_purity", "silhouette")
                           if f"separation_{c}" in results})
    for c in ("nn_purity", "silhouette"):
        if f"separation_{c}" in results:
            spread[f"{c}_std"] = per_target[f"separation_{c}"].std(ddof=1)
    spread = spread.reindex(sep["defense"])
    vs = {d: paired(train, "margin", d, "none") for d in sep["defense"] if d != "none"}
    table = pd.DataFrame({"defense": sep["defense"].values, "margin (training features)": with_interval(sep, "margin", 3).values,
                          "margin, vs none": ["(baseline)" if d == "none" else format_interval(
                              vs[d]["difference"], vs[d]["ci_low"], vs[d]["ci_high"], 3, signed=True) if vs.get(d) else "n/a"
                              for d in sep["defense"]]})
    if held is not None:
        table["margin (held-out features)"] = [with_interval(held.loc[[d]], "margin", 3).iloc[0] if d in held.index
                                               else "n/a" for d in sep["defense"]]
    for c, name in (("nn_purity", "NN purity (± sd over seeds)"), ("silhouette", "silhouette (± sd over seeds)")):
        if f"{c}_mean" in spread:
            table[name] = with_spread(spread.reset_index(drop=True), c, 3).values
    return table


def claim4_text(verdicts: pd.DataFrame) -> str | None:
    """Markdown: the claim 4 rows (RE's held-out margin against 0; RE against none within the
    separation margin) with their verdicts, or None without them."""
    rows = verdicts[verdicts["claim"].isin([c.number for c in CLAIM_TABLE if c.measure == "separation"])]
    if rows.empty:
        return None
    parts = []
    for v in rows.itertuples():
        what = "RE − none" if " vs " in v.comparison else "RE's held-out margin"
        parts.append(f"{what} {format_interval(v.estimate, v.ci_low, v.ci_high, 3, signed=True)} ({v.note}): "
                     f"{v.verdict}")
    from ..verdicts import combine_verdicts

    return ("; ".join(parts) + f". Verdict on the paper's second feature-space claim (private identities stay apart "
            f"under RE): **{combine_verdicts(rows)}** (supported only when both rows are).")


def feature_space_figures(results: pd.DataFrame, run_dir: str | Path) -> list[tuple[Path, str]]:
    """(figure, caption) of every run of the first seed with a UMAP figure."""
    out = []
    seed0 = int(results["seed"].min())
    for r in attack_dirs(results, run_dir).itertuples():
        figure = r.path / "feature_space.png"
        if not figure.is_file():
            continue
        info = run_record(r.path, "gap.json", default={})
        iou = ""
        if "hull_overlap_recon_private" in info:
            iou = (f" Convex-hull overlap (intersection over union, mean over identities) of reconstructions with "
                   f"private features {info['hull_overlap_recon_private']:.2f}, with erased features "
                   f"{info['hull_overlap_recon_erased']:.2f}.")
        out.append((figure, f"UMAP embedding of the target's penultimate features, {r.attack} against {r.defense}, "
                            f"seed {seed0}: private training images (blue), the same images Random-Erased (orange), "
                            f"reconstructions (red), one panel per attacked identity, convex hull per group; grey: "
                            f"private images of the other identities.{iou}"))
    return out
