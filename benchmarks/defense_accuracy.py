"""Natural accuracy of every defense name on mnist5k (CLI defaults: 6 epochs, batch 64),
over seeds, with what each defense reports at the end of training (BiDO's two dependence
terms, DP-SGD's epsilon and delta, Trap-MID's trapdoor accuracy).

Every run is cached in ``--root`` (one directory per name and seed), so the script can be
run in pieces (``--names``, ``--seeds``) and resumed; the table is printed from whatever has
finished.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/defense_accuracy.py --seeds 0 1 2 > table.md
    OMP_NUM_THREADS=1 python benchmarks/defense_accuracy.py --names trap-mid --seeds 0   # one piece
    OMP_NUM_THREADS=1 python benchmarks/defense_accuracy.py --table-only                  # print the table
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from re_analysis.config import TrainConfig
from re_analysis.defenses import BASELINES, list_defenses
from re_analysis.training import train

REPORTED = ("bido_hsic_input", "bido_hsic_label", "bido_coco_input", "bido_coco_label", "epsilon", "delta",
            "trapdoor_accuracy")


def default_names() -> list[str]:
    ablations = sorted(n for n in list_defenses() if n.startswith("re-"))
    return ["none", "none-noaug", "random-erasing", *BASELINES, *ablations]


def run(names, seeds, root: Path, dataset: str) -> None:
    for seed in seeds:
        for name in names:
            out = root / f"{name}-s{seed}"
            if (out / "metrics.json").is_file():
                continue
            t0 = time.perf_counter()
            m = train(TrainConfig(dataset=dataset, defense=name, seed=seed, device="cpu"), out, progress=False).metrics
            print(f"# {name} seed {seed}: natural accuracy {m['natural_accuracy']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


def cell(values: list[float], digits: int = 4) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}g}"
    return f"{statistics.mean(values):.{digits}g} ± {statistics.stdev(values):.2g}"


def table(names, root: Path) -> str:
    rows = ["| defense | seeds | natural accuracy (mean ± sd) | augmentation | end-of-training report |",
            "|---|---|---|---|---|"]
    for name in names:
        ms = [json.loads(p.read_text()) for p in sorted(root.glob(f"{name}-s*/metrics.json"))]
        ms = [m for m in ms if m["defense"] == name]
        if not ms:
            continue
        extra = "; ".join(f"{k} {cell([m[k] for m in ms if m.get(k) is not None])}"
                          for k in REPORTED if any(m.get(k) is not None for m in ms))
        rows.append(f"| {name} | {len(ms)} | {cell([m['natural_accuracy'] for m in ms])} | "
                    f"{ms[0]['augmentation']['name']} | {extra} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--names", nargs="*", default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--root", type=Path, default=Path("runs/defense-accuracy"))
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    names = args.names or default_names()
    if not args.table_only:
        run(names, args.seeds, args.root, args.dataset)
    print(table(args.names or default_names(), args.root))


if __name__ == "__main__":
    main()
