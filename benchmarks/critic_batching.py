"""One WGAN-GP critic step (GMI's prior) as the suite runs it — three critic forwards
(fakes, reals, interpolates) — against one forward over the concatenated batch, measured in
the same run at one torch thread (a study worker's setting). With instance norm the two are
the same function; the question is only speed.

Usage: python benchmarks/critic_batching.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import time

import torch

from re_analysis.attacks.gan import Discriminator, Generator


def penalty(grad: torch.Tensor) -> torch.Tensor:
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def separate(g, d, real):
    with torch.no_grad():
        fake = g(torch.randn(len(real), g.z_dim))
    mix = (torch.rand(len(real), 1, 1, 1) * (real - fake) + fake).requires_grad_(True)
    grad, = torch.autograd.grad(d(mix).sum(), mix, create_graph=True)
    (d(fake).mean() - d(real).mean() + 10 * penalty(grad)).backward()


def concatenated(g, d, real):
    n = len(real)
    with torch.no_grad():
        fake = g(torch.randn(n, g.z_dim))
    mix = (torch.rand(n, 1, 1, 1) * (real - fake) + fake).requires_grad_(True)
    out = d(torch.cat([fake, real, mix]))
    grad, = torch.autograd.grad(out[2 * n:].sum(), mix, create_graph=True)
    (out[:n].mean() - out[n:2 * n].mean() + 10 * penalty(grad)).backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g, d = Generator(28, 1, 100, 32), Discriminator(28, 1, 32)
    real = torch.rand(64, 1, 28, 28) * 2 - 1
    times = {}
    for f in (separate, concatenated, separate, concatenated):  # interleaved: drift hits both
        t = time.perf_counter()
        for _ in range(args.repeats):
            f(g, d, real)
        times.setdefault(f.__name__, []).append((time.perf_counter() - t) / args.repeats * 1000)
    base = min(times["separate"])
    for name, ts in times.items():
        print(f"{name:>12}: {min(ts):7.1f} ms per critic step   ratio to separate {min(ts) / base:.2f}")


if __name__ == "__main__":
    main()
