"""The pilot behind the verdict rules' margins: how much an undefended glyph target's natural
accuracy and held-out class-separation margin move from one training seed to the next.

Trains the ``decisive`` preset's undefended target (cnn28s, 20 epochs on glyphs at 28 px) on
seeds OUTSIDE the decisive design (100-104 by default: no unit of the study is touched) and
measures, per seed, the natural accuracy on the private test split and the mean held-out
margin of the test images against the training features (what claim 4 reads:
:func:`re_analysis.features.separation.heldout_margins`, all 100 identities, 200 training
images per identity as the gap analysis takes). Prints both per seed, their standard
deviation over seeds and twice it: the smallest change retraining alone does not produce
about 95% of the time, which is what a non-inferiority margin should exceed.

    python benchmarks/margins_pilot.py --out /work/study/pilot [--seeds 100 101 102 103 104]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="study folder for the pilot targets (outside the checkout)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--preset", default="decisive")
    args = ap.parse_args()

    from re_analysis.data import load_dataset, materialize
    from re_analysis.features.extract import extract_features
    from re_analysis.features.separation import heldout_margins
    from re_analysis.study import StudyPaths, load_preset, train_target

    torch.set_num_threads(1)
    preset = load_preset(args.preset, seeds=args.seeds)
    paths = StudyPaths(Path(args.out))
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        res = train_target(preset, paths, "none", seed, progress=False)
        splits = load_dataset(preset.dataset, root=preset.root, seed=seed, image_size=preset.image_size,
                              **preset.dataset_params)
        x, y = materialize(splits.private_train)
        g = torch.Generator().manual_seed(seed)
        keep = torch.cat([torch.nonzero(y == c).squeeze(1)[torch.randperm(int((y == c).sum()), generator=g)[:200]]
                          for c in y.unique()])
        xt, yt = materialize(splits.private_test)
        f_train = extract_features(res.model, x[keep]).numpy()
        f_test = extract_features(res.model, xt).numpy()
        margin = float(heldout_margins(f_train, y[keep].numpy(), f_test, yt.numpy()).mean())
        rows.append((seed, res.metrics["natural_accuracy"], margin, time.perf_counter() - t0))
        print(f"seed {seed}: natural accuracy {rows[-1][1]:.4f}, mean held-out margin {margin:.4f} "
              f"({rows[-1][3]:.0f} s)", flush=True)
    nat = np.array([r[1] for r in rows])
    mar = np.array([r[2] for r in rows])
    print(f"\n{len(rows)} seeds of `{args.preset}`'s undefended target")
    print(f"natural accuracy: mean {nat.mean():.4f}, sd over seeds {nat.std(ddof=1):.4f}, 2 sd {2 * nat.std(ddof=1):.4f}")
    print(f"held-out margin:  mean {mar.mean():.4f}, sd over seeds {mar.std(ddof=1):.4f}, 2 sd {2 * mar.std(ddof=1):.4f}")


if __name__ == "__main__":
    main()
