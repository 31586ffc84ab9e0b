"""Where a study's time went, read from the records its steps wrote.

Usage: python benchmarks/study_time.py RUN_DIR [WALL_SECONDS]

Every step records how long it computed: a target or judge ``metrics.json``
(``train_seconds_this_call``), a prior ``prior.json`` (``train_seconds_this_call``), an
attack ``attack.json`` (``seconds``), its evaluation ``metrics.json`` (``evaluate_seconds``)
and its feature-space analysis ``gap.json`` (``seconds``). Prints one row per kind of step:
count, total and mean seconds, share of the summed step time; with WALL_SECONDS (the
study's measured wall time), the ratio of summed step time to wall time (the parallel
speed-up the worker processes gave, against running the same steps one after another).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def step_times(root: Path) -> pd.DataFrame:
    rows = []
    for path in root.rglob("*.json"):
        if ".damaged-" in str(path) or path.name not in ("metrics.json", "prior.json", "attack.json", "gap.json"):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        run = path.parent.name
        if path.name == "prior.json":
            rows.append({"step": f"prior ({record.get('kind')})", "run": run,
                         "seconds": record.get("train_seconds_this_call")})
        elif path.name == "attack.json":
            rows.append({"step": f"attack ({record.get('attack')})", "run": run, "seconds": record.get("seconds")})
        elif path.name == "gap.json":
            rows.append({"step": "feature-space gap", "run": run, "seconds": record.get("seconds")})
        elif "train_seconds_this_call" in record:
            kind = ("robust judge" if run.startswith("robust-eval") else "judge" if run.startswith("eval")
                    else "target")
            rows.append({"step": kind, "run": run, "seconds": record["train_seconds_this_call"]})
        elif "evaluate_seconds" in record:
            rows.append({"step": "evaluation (judges, chance, PRDC)", "run": run, "seconds": record["evaluate_seconds"]})
    return pd.DataFrame(rows, columns=["step", "run", "seconds"]).dropna()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    times = step_times(Path(argv[0]))
    table = times.groupby("step")["seconds"].agg(["count", "sum", "mean"]).sort_values("sum", ascending=False)
    table["share"] = table["sum"] / table["sum"].sum()
    print(table.round(3).to_markdown())
    total = table["sum"].sum()
    print(f"\nsummed step time: {total:.0f} s")
    if len(argv) > 1:
        wall = float(argv[1])
        print(f"wall time: {wall:.0f} s; summed step time / wall time: {total / wall:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
