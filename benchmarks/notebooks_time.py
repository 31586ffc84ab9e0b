"""The book's notebooks one at a time vs two at a time, over a finished study.

Usage: python benchmarks/notebooks_time.py RUN_DIR PRESET [--repeats N]

Runs ``re_analysis.book.execute_notebooks`` on the study in RUN_DIR (which must be complete:
the notebooks only read it) with ``workers=1`` and ``workers=2``, alternating, into temporary
stages, and prints the wall time of each and the ratio (sequential / parallel) measured in
the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from re_analysis.book import execute_notebooks, find_source


def timed(run_dir: Path, preset: str, workers: int) -> float:
    with tempfile.TemporaryDirectory() as stage:
        t0 = time.perf_counter()
        execute_notebooks(find_source(None), Path(stage), {"run_dir": str(run_dir), "preset": preset, "device": "cpu"},
                          progress=False, workers=workers)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("preset")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    best = {1: float("inf"), 2: float("inf")}
    for _ in range(args.repeats):
        for workers in (1, 2):
            best[workers] = min(best[workers], timed(args.run_dir.resolve(), args.preset, workers))
    print(f"notebooks one at a time: {best[1]:.1f} s; two at a time: {best[2]:.1f} s; "
          f"speed-up {best[1] / best[2]:.2f}x (best of {args.repeats})")


if __name__ == "__main__":
    main()
