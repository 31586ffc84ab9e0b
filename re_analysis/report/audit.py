"""The audit report: does the audited model leak its private classes, under which judge, how
far above chance and against what ceiling, which classes, and what Random Erasing changes.

Reads an audit folder (``re-analysis audit --out DIR``): ``audit.json``, ``results.csv``,
``summary.csv``, ``judgements.csv``, ``verdicts.csv``.

Example:
    >>> import pandas as pd
    >>> j = pd.DataFrame({"defense": ["none"] * 4, "attack": ["gmi"] * 4, "label": [0, 0, 1, 2],
    ...                   "hit_top1": [1, 0, 0, 1]})
    >>> leaked_classes(j)[["attack", "classes leaked", "of"]].values.tolist()
    [['gmi', 2, 3]]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics.judges import JUDGE_TABLE, PRIMARY_JUDGE, judge_spec
from ..notebook import format_interval

__all__ = ["audit_header", "leak_table", "leaked_classes", "defense_change"]


def audit_header(run_dir: str | Path) -> str:
    """Markdown: what was audited, on which data, with which budgets."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "audit.json").read_text())
    cfg, model = record["config"], record["model"]
    results = pd.read_csv(run_dir / "results.csv")
    none = results[results["defense"] == "none"]
    nat = float(none["natural_accuracy"].iloc[0]) if len(none) else float("nan")
    return (f"**Model**: `{cfg.get('model') or cfg.get('entry')}` ({model['arch']}; inputs "
            f"{cfg['channels']} x {cfg['image_size']} px, convention {model['convention']['pixels']}; features: "
            f"{model['features']}). **Data**: private classes from `{cfg['private']}`, public identities from "
            f"`{cfg['public']}`. **Budgets**: the `{record['preset']}` preset, seed {cfg['seed']}. Its accuracy on the "
            f"held-out private images: **{nat:.3f}**.")


def leak_table(summary: pd.DataFrame, label: str = "none") -> pd.DataFrame:
    """Per attack and judge: attack accuracy [95% CI over identities], the chance rate of
    unoptimised prior samples, the judge's ceiling (its acceptance of held-out private
    images) and accuracy / chance."""
    s = summary[summary["defense"] == label]
    rows = []
    for r in s.to_dict("records"):
        for judge in JUDGE_TABLE:
            acc = judge.accuracy
            if not np.isfinite(r.get(f"{acc}_mean", np.nan)):
                continue
            a, c = r[f"{acc}_mean"], r.get(f"{judge.chance}_mean", np.nan)
            rows.append({"attack": r["attack"], "judge": judge.display,
                         "attack accuracy [95% CI]": format_interval(a, r.get(f"{acc}_ci_low"), r.get(f"{acc}_ci_high")),
                         "chance": f"{c:.3f}" if np.isfinite(c) else "n/a",
                         "ceiling": f"{r.get(f'{judge.ceiling}_mean', np.nan):.3f}",
                         "accuracy / chance": f"{a / c:.1f}x" if np.isfinite(c) and c > 0 else "n/a"})
    return pd.DataFrame(rows)


def leaked_classes(judgements: pd.DataFrame, label: str = "none", judge: str = PRIMARY_JUDGE) -> pd.DataFrame:
    """Per attack: how many private classes have at least one reconstruction the judge
    accepts, of those attacked, and which."""
    j = judgements[judgements["defense"] == label]
    rows = []
    for attack, g in j.groupby("attack", sort=False):
        per = g.groupby("label")[judge_spec(judge).column].max()
        rows.append({"attack": attack, "classes leaked": int(per.sum()), "of": int(len(per)),
                     "share": round(float(per.mean()), 3), "leaked classes": ", ".join(map(str, per[per > 0].index))})
    return pd.DataFrame(rows)


def defense_change(judgements: pd.DataFrame) -> pd.DataFrame | None:
    """With ``--compare-defense``: the retrained copy minus the audited model, per attack and
    judge, paired on the same identities (None without a compared defense). One seed: the
    interval covers the identities' spread, not the seeds'."""
    from ..metrics.stats import paired_table

    if judgements["defense"].nunique() < 2:
        return None
    rows = []
    for judge in JUDGE_TABLE:
        if judge.column not in judgements:
            continue
        t = paired_table(judgements, judge.column, reference="none", by=["attack"], unit="label")
        for r in t.to_dict("records"):
            rows.append({"attack": r["attack"], "defense": r["defense"], "judge": judge.display,
                         "defense − your model [95% CI]": format_interval(r["difference"], r["ci_low"], r["ci_high"],
                                                                          signed=True),
                         "p": f"{r['p_value']:.3f}", "reading": r["verdict"]})
    return pd.DataFrame(rows)
