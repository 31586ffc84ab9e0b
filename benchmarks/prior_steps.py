"""One generator step of each prior (GMI's WGAN-GP, KEDMI's GAN, PLG-MI's conditional GAN) at
28 px on one CPU thread, with Adam as torch runs it by default (one kernel per operation,
``foreach``) and fused (one kernel per step), measured in the same run.

KEDMI's discriminator carries minibatch discrimination: a 3,136 x 3,200 weight (10 M of its
parameters) that Adam updates five times per generator step.

Usage: python benchmarks/prior_steps.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from re_analysis.attacks.augment import plg_augmentation
from re_analysis.attacks.priors import STEP, PriorConfig, build_gan, prior_optimizers
from re_analysis.models import create_model


def step_time(kind: str, fused: bool, repeats: int) -> float:
    torch.manual_seed(0)
    cfg = PriorConfig(kind=kind, target_hash=None if kind == "wgan-gp" else "benchmark")
    g, d = build_gan(cfg, 1, 28, 5)
    opt_g, opt_d = prior_optimizers(cfg, g, d, fused=fused)
    public = torch.rand(2000, 1, 28, 28) * 2 - 1
    target = create_model("cnn28", 5, 1, 28).eval()
    batch = {"public": public, "soft": torch.softmax(torch.randn(2000, 5), 1), "labels": torch.randint(0, 5, (2000,)),
             "augment": plg_augmentation(28, 1, False, jitter_p=0.5), "target": target}
    gen = torch.Generator().manual_seed(0)
    STEP[kind](cfg, g, d, opt_g, opt_d, batch, gen, "cpu")  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        STEP[kind](cfg, g, d, opt_g, opt_d, batch, gen, "cpu")
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'prior':8} {'foreach s/step':>15} {'fused s/step':>13} {'speed-up':>9}")
    for kind in STEP:
        slow, fast = step_time(kind, False, args.repeats), step_time(kind, True, args.repeats)
        print(f"{kind:8} {slow:15.3f} {fast:13.3f} {slow / fast:8.2f}x")


if __name__ == "__main__":
    main()
