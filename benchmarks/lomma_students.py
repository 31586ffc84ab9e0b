"""What each LOMMA student costs on one CPU thread at 28 px, against the target it is
distilled from, measured in the same run: one distillation step (SGD, batch 64) and one
attack step's share (logits of 40 reconstructions and their gradient to the images).

LOMMA's own students (EfficientNet-B0/B1/B2) cost a few percent of its 64 px targets; the
suite's 28 px students must not cost more than the digit target ``cnn28``.

Usage: python benchmarks/lomma_students.py [--target cnn28s] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from re_analysis.attacks.lomma import STUDENTS, build_student
from re_analysis.models.inputs import channels_last


def timed(step, repeats: int) -> float:
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1000


def costs(arch: str, repeats: int, classes: int = 100) -> tuple[float, float]:
    torch.manual_seed(0)
    model = channels_last(build_student(arch, classes, 1, 28))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = channels_last(torch.randn(64, 1, 28, 28)), torch.randint(0, classes, (64,))
    probe = torch.randn(40, 1, 28, 28, requires_grad=True)

    def distill_step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def attack_step():
        model(channels_last(probe)).sum().backward()

    train_ms = timed(distill_step, repeats)
    model.eval()
    return train_ms, timed(attack_step, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cnn28s")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = costs(args.target, args.repeats)
    print(f"{'model':10} {'distill ms':>11} {'x target':>9} {'attack ms':>10} {'x target':>9}")
    for arch in dict.fromkeys((args.target, "cnn28", *STUDENTS[28])):
        train_ms, attack_ms = base if arch == args.target else costs(arch, args.repeats)
        print(f"{arch:10} {train_ms:11.1f} {train_ms / base[0]:9.2f} {attack_ms:10.1f} {attack_ms / base[1]:9.2f}")


if __name__ == "__main__":
    main()
