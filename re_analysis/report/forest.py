"""The verdicts as one picture: a forest plot of every claim's comparisons, each estimate with
its 95% interval against the line the claim must clear, coloured by verdict; and one sentence
per verdict for the first page of the book.

Each row is one row of ``verdicts.csv`` (the primary judge and attack for the attack claims).
In points: attack and natural accuracy differences, and claim 3's shares; claim 4's margins are
scaled by 100 to sit on the same axis. The line to clear is each row's own threshold (0 for a
difference, one half for claim 3's share, minus the margin for a non-inferiority row). Hollow
markers are rows a gate made inconclusive (no chance rate, the attack not leaking, utility
that differs between the arms), not their interval; claim 1's rows carry the natural-accuracy
difference of the same arms under its label.

Example:
    >>> import pandas as pd
    >>> v = pd.DataFrame({"claim": [1], "dataset": ["glyphs"], "attack": ["gmi"], "judge": ["top1"],
    ...                   "comparison": ["random-erasing vs none"], "estimate": [-0.1], "ci_low": [-0.2],
    ...                   "ci_high": [0.0], "verdict": ["inconclusive"], "note": ["the interval covers zero"]})
    >>> forest_rows(v)[["label", "estimate", "threshold", "gated"]].values.tolist()
    [['1. random-erasing vs none', -10.0, 0.0, False]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.judges import PRIMARY_JUDGE
from ..verdicts import claim_of

__all__ = ["forest_rows", "forest_plot", "forest_caption", "verdict_sentences", "VERDICT_COLORS"]

VERDICT_COLORS = {"supported": "#2ca02c", "not supported": "#d62728", "inconclusive": "#7f7f7f",
                  "no verdict": "#c7c7c7"}


def forest_rows(verdicts: pd.DataFrame, judge: str = PRIMARY_JUDGE, attack: str | None = None) -> pd.DataFrame:
    """The plotted rows: the verdicts of the primary ``judge`` and ``attack`` (default: the
    first attack) for attack claims, every row of claims 2-4, in claim order, in points."""
    columns = ["claim", "label", "estimate", "low", "high", "threshold", "verdict", "gated", "natural"]
    if verdicts.empty:
        return pd.DataFrame(columns=columns)
    if attack is None:
        attack = next((a for a in verdicts["attack"] if isinstance(a, str) and a), None)
    keep = [(not claim_of(r.claim).per_judge or r.judge == judge) and (not claim_of(r.claim).per_attack or r.attack == attack)
            for r in verdicts.itertuples()]
    v = verdicts[keep].sort_values("claim", kind="stable")
    threshold = v["threshold"].astype(float) if "threshold" in v else pd.Series(0.0, index=v.index)
    gate = v["gate"].fillna("").astype(str) if "gate" in v else pd.Series("", index=v.index)
    nat = (v["natural_estimate"].astype(float) if "natural_estimate" in v else pd.Series(np.nan, index=v.index))
    nat_lo = v["natural_ci_low"].astype(float) if "natural_ci_low" in v else nat
    nat_hi = v["natural_ci_high"].astype(float) if "natural_ci_high" in v else nat
    natural = [f"natural {100 * e:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if c == 1 and np.isfinite(e) else ""
               for c, e, lo, hi in zip(v["claim"], nat, nat_lo, nat_hi)]
    return pd.DataFrame({
        "claim": v["claim"].astype(int).values,
        "label": [f"{int(r.claim)}. {r.comparison}" for r in v.itertuples()],
        "estimate": 100 * v["estimate"].astype(float).values, "low": 100 * v["ci_low"].astype(float).values,
        "high": 100 * v["ci_high"].astype(float).values, "threshold": 100 * threshold.values,
        "verdict": v["verdict"].values, "gated": [g not in ("", "seeds") for g in gate], "natural": natural},
        columns=columns)


def forest_plot(verdicts: pd.DataFrame, judge: str = PRIMARY_JUDGE, attack: str | None = None, title: str = ""):
    """One row per comparison: estimate and 95% interval (points) against the claim's line,
    coloured by verdict, hollow where a gate made it inconclusive. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = forest_rows(verdicts, judge, attack)
    fig, ax = plt.subplots(figsize=(8.2, 0.42 * max(len(rows), 1) + 2.2))
    y = np.arange(len(rows))
    for i, r in enumerate(rows.itertuples()):
        color = VERDICT_COLORS.get(r.verdict, "#7f7f7f")
        if np.isfinite(r.low) and np.isfinite(r.high):
            ax.plot([r.low, r.high], [i, i], color=color, lw=2)
        ax.plot(r.estimate, i, "o", ms=7, color=color, mfc="white" if r.gated else color)
        ax.plot([r.threshold] * 2, [i - 0.35, i + 0.35], color="0.2", lw=1)
    ax.axvline(0, color="0.6", lw=0.8, ls=":")
    # claim 1: what the protection cost, under its label
    ax.set_yticks(y, [f"{r.label}\n({r.natural})" if r.natural else r.label for r in rows.itertuples()], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("difference, points (claim 4: margin x 100); | the line the claim must clear")
    handles = [Line2D([], [], marker="o", color=c, lw=2, label=v) for v, c in VERDICT_COLORS.items()]
    handles.append(Line2D([], [], marker="o", color="0.4", mfc="white", lw=0, label="gated (no leak, no chance rate, utility)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(len(rows), 1) - 0.12), ncol=3,
              fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def forest_caption(results: pd.DataFrame, attack: str | None, preset: str | None = None) -> str:
    """The forest plot's caption: what each row draws, over which design, against which line.

    Example:
        >>> r = pd.DataFrame({"seed": [0, 1, 2], "n_classes_attacked": [40, 40, 40]})
        >>> c = forest_caption(r, "lomma-gmi", "quick")
        >>> "t over 3 seed means" in c and "40 identities" in c and "one half" in c
        True
        >>> r["defense"] = ["none", "none", "random-erasing"]  # a design still computing
        >>> "both arms of a row share, 1 to 2 seeds" in forest_caption(r, "gmi")
        True
    """
    seeds = sorted(results["seed"].unique())
    ids = int(results["n_classes_attacked"].max()) if "n_classes_attacked" in results else 0
    # arms with other seed counts (a published design still computing): a row pairs the seeds both its arms have
    counts = sorted(set(results.groupby("defense")["seed"].nunique())) if "defense" in results else [len(seeds)]
    if len(counts) > 1:
        design = (f"t over the seed means both arms of a row share, {counts[0]} to {counts[-1]} seeds here (one "
                  "seed: t over its identities)")
    else:
        design = f"t over {len(seeds)} seed means" if len(seeds) > 1 else "t over the identities of one seed"
    design += (f"; preset `{preset}`" if preset else "") + f", seeds {', '.join(map(str, seeds))}"
    design += f", {ids} identities attacked per seed" if ids else ""
    return (f"Every claim's comparisons under the open-set evaluation model and the primary attack ({attack}): "
            f"estimate and 95% interval (identities as the unit, restarts averaged, {design}), coloured by verdict "
            "(verdict rules: the method chapter); the short bar marks the line a row must clear (0 for a difference, "
            "one half for claim 3's share of reconstructions nearer an erased feature, minus the margin for claims 2 "
            "and 4); hollow points are gated (no chance rate, the attack not leaking, or utility that differs between "
            "the arms). A claim with several rows is supported only when every row is; claim 1's rows carry the "
            "natural-accuracy difference of the same arms under their label.")


def _amount(value: float, scale: str) -> str:
    """An effect in the claim's own terms: points of accuracy, a share, or a margin."""
    return f"{value:.3f}" if scale in ("share", "margin") else f"{100 * value:.0f} points"


def verdict_sentences(verdict_summary: pd.DataFrame) -> str:
    """Markdown: one sentence per claim and dataset — its verdict and, where inconclusive,
    the largest effect its main comparison rules out, and what the design detects."""
    lines = []
    for s in verdict_summary.itertuples():
        claim = claim_of(s.claim)
        text = f"- **Claim {s.claim}** ({claim.text}): **{s.verdict}**"
        if s.verdict == "inconclusive" and np.isfinite(s.rules_out):
            text += f"; no effect larger than {_amount(s.rules_out, claim.scale)} in its main comparison"
        if np.isfinite(s.mde):
            text += f" (the design detects {_amount(s.mde, claim.scale)})"
        design = getattr(s, "design", "complete")
        if isinstance(design, str) and design not in ("", "complete"):
            interim = getattr(s, "interim_verdict", "")
            text += f" — the design is not complete yet: {design}" + (f" (interim reading: {interim})" if interim else "")
        lines.append(text + ".")
    return "\n".join(lines)
