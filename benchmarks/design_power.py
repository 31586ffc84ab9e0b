"""Size a study by power: the half-width claim 1's interval reaches for each design.

Reads a finished study (``judgements.csv``, ``results.csv``), estimates the variance
components (seed, identity, restart) of claim 1's paired difference (RE minus none, under
the judge and attack given) and of the undefended attack accuracy, and prints the expected
95% half-width of the t-interval on seed means for seeds x identities x restarts, with the
compute each design costs relative to the study's own (targets scale with seeds, attacks
with seeds x identities x restarts: GMI optimises every row of a batch together).

    python benchmarks/design_power.py runs/quick [--judge top1] [--attack gmi] [--goal 0.06]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from re_analysis.metrics import expected_half_width, minimum_detectable_effect, variance_components
from re_analysis.metrics.judges import judge_spec


def paired_differences(j: pd.DataFrame, judge: str, attack: str, defense: str = "random-erasing") -> pd.DataFrame:
    a = j[(j["attack"] == attack) & (j["defense"] == defense)].set_index(["seed", "index"])
    b = j[(j["attack"] == attack) & (j["defense"] == "none")].set_index(["seed", "index"])
    both = a.index.intersection(b.index)
    return pd.DataFrame({"seed": both.get_level_values("seed"), "label": a.loc[both, "label"].to_numpy(),
                         "d": a.loc[both, judge].to_numpy(float) - b.loc[both, judge].to_numpy(float)})


def step_seconds(root: Path, attack: str) -> tuple[float, float]:
    """Mean seconds of one target's training and of one attack run (per reconstruction row)."""
    res = pd.read_csv(root / "results.csv")
    res = res[res["attack"] == attack]
    train, per_row = [], []
    for r in res.itertuples():
        m = json.loads((root / r.target_dir / "metrics.json").read_text())
        train.append(m.get("train_seconds_this_call", np.nan))
        a = json.loads((root / r.attack_dir / "attack.json").read_text())
        per_row.append(a["seconds"] / max(1, len(a["classes"]) * a["per_class"]))
    return float(np.nanmean(train)), float(np.nanmean(per_row))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study")
    ap.add_argument("--judge", default="top1", help="a judge name (top1, robust, pixel, top1_closed)")
    ap.add_argument("--attack", default="gmi")
    ap.add_argument("--goal", type=float, default=0.06, help="half-width to reach")
    args = ap.parse_args(argv)
    root = Path(args.study)
    j = pd.read_csv(root / "judgements.csv")
    column = judge_spec(args.judge).column
    d = paired_differences(j, column, args.attack)
    comp = variance_components(d["d"], d["seed"], d["label"])
    none = j[(j["attack"] == args.attack) & (j["defense"] == "none")]
    lv = variance_components(none[column].astype(float), none["seed"], none["label"])
    print(f"study {root}: {comp['n_seeds']} seeds x {comp['units_per_seed']:.0f} identities x "
          f"{comp['restarts']:.0f} restarts; judge {args.judge}, attack {args.attack}")
    for name, c in (("RE - none (claim 1)", comp), ("none's accuracy", lv)):
        print(f"  variance components of {name}: seed {c['seed']:.4f}, identity {c['unit']:.4f}, "
              f"restart {c['within']:.4f}")
    n_def = j["defense"].nunique()
    train_s, row_s = step_seconds(root, args.attack)
    base = comp["n_seeds"] * n_def * (train_s + row_s * comp["units_per_seed"] * comp["restarts"])
    print(f"  one target trains in {train_s:.0f} s; one reconstruction row costs {row_s:.2f} s of attack\n")
    rows = []
    for seeds, ids, r in itertools.product((3, 4, 5, 6, 8, 10), (8, 20, 40, 60, 100), (1, 5)):
        hw = expected_half_width(comp, seeds, ids, r)
        var_mean = comp["seed"] + comp["unit"] / ids + comp["within"] / (ids * r)
        mde = minimum_detectable_effect(np.sqrt(var_mean / seeds), seeds - 1)
        cost = seeds * n_def * (train_s + row_s * ids * r)
        rows.append({"seeds": seeds, "identities": ids, "restarts": r, "half_width": hw, "mde": mde,
                     "compute_vs_study": cost / base})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ok = table[table["half_width"] <= args.goal].sort_values("compute_vs_study")
    if ok.empty:
        print(f"\nno design here reaches a half-width of {args.goal}")
    else:
        best = ok.iloc[0]
        print(f"\ncheapest design with half-width <= {args.goal}: {int(best.seeds)} seeds x {int(best.identities)} "
              f"identities x {int(best.restarts)} restarts (half-width {best.half_width:.3f}, "
              f"{best.compute_vs_study:.2f}x the study's compute)")


if __name__ == "__main__":
    main()
