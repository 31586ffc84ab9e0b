"""channels_last on the CPU: the quick study's three costly inner steps, each in both memory
formats, measured in the same run at one torch thread (a study worker's setting).

- target step: one SGD step of ``cnn28s`` on a batch of 64 glyph-sized images (28 px);
- judge step: the same for ``preresnet8`` (the open-set evaluation model);
- critic step: one WGAN-GP critic step (GMI's prior: fakes, reals, gradient penalty);
- GMI step: one latent-search iteration on 40 restarts (generator, critic, target, backward).

channels_last is a layout hint to oneDNN; the arithmetic is the same, so the question is only
speed (and a training run stays deterministic: same seed, same weights).

Usage: python benchmarks/channels_last.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from re_analysis.attacks.gan import Discriminator, Generator
from re_analysis.attacks.priors import gradient_penalty
from re_analysis.models import create_model
from re_analysis.models.inputs import channels_last


def layout(cl: bool, *items):
    """The suite's own conversion when ``cl``, else the items as they are (contiguous)."""
    if not cl:
        return items[0] if len(items) == 1 else items
    return channels_last(*items)


def classifier_step(arch: str, cl: bool):
    torch.manual_seed(0)
    model = layout(cl, create_model(arch, num_classes=100, in_channels=1, image_size=28))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 100, (64,))

    def step():
        loss = F.cross_entropy(model(layout(cl, x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def gan(cl: bool):
    torch.manual_seed(0)
    return layout(cl, Generator(28, 1, 100, 32), Discriminator(28, 1, 32))


def critic_step(cl: bool):
    g, d = gan(cl)
    opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = layout(cl, torch.rand(64, 1, 28, 28) * 2 - 1)

    def step():
        with torch.no_grad():
            fake = g(torch.randn(64, 100))  # the generator's output keeps its layout
        loss = d(fake).mean() - d(real).mean() + 10 * gradient_penalty(d, real, fake)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def gmi_step(cl: bool):
    g, d = gan(cl)
    torch.manual_seed(0)
    target = layout(cl, create_model("cnn28s", num_classes=100, in_channels=1, image_size=28).eval())
    for m in (g, d, target):
        m.eval().requires_grad_(False)
    z = torch.randn(40, 100).requires_grad_(True)
    y = torch.randint(0, 100, (40,))
    opt = torch.optim.SGD([z], lr=0.01, momentum=0.9, nesterov=True)

    def step():
        x = g(z)
        loss = -d(x).mean() + 100 * F.cross_entropy(target(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed(step, repeats: int) -> float:
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = {"target step (cnn28s)": lambda cl: classifier_step("cnn28s", cl),
             "judge step (preresnet8)": lambda cl: classifier_step("preresnet8", cl),
             "critic step (WGAN-GP)": critic_step, "GMI step (40 restarts)": gmi_step}
    print(f"torch {torch.__version__}, 1 thread, {args.repeats} repeats; contiguous then channels_last, twice")
    print(f"{'step':28s} {'contiguous ms':>14s} {'channels_last ms':>17s} {'speed-up':>9s}")
    for name, make in cases.items():
        base, cl = [], []
        for _ in range(2):  # interleaved, so a drift in the machine's speed hits both alike
            base.append(timed(make(False), args.repeats))
            cl.append(timed(make(True), args.repeats))
        b, c = min(base), min(cl)
        print(f"{name:28s} {b * 1e3:14.1f} {c * 1e3:17.1f} {b / c:8.2f}x")


if __name__ == "__main__":
    main()
