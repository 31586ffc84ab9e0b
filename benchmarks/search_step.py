"""One step of a decisive unit's latent searches, by the ways left to compute it faster (issue 34).

After the default levers (``benchmarks/unit_cost.py``), the searches are 80% of a unit. This
measures one step (forward through generator, critic, target and LOMMA's students, backward to
the latents) of each search at the decisive design's size, eager as the suite runs it (the
baseline) against:

- ``chunks:N``: the rows N at a time, each chunk's gradient landing in its own rows (activations
  in cache instead of memory; bitwise where the BLAS picks the same kernels for N rows);
- ``compile``: ``torch.compile`` (inductor, CPU C++ kernels) of the loss, backward through
  AOTAutograd;
- ``bf16``: the forward under bfloat16 autocast (reduced precision: the ``bf16_search`` lever).

Each variant's numbers are checked against the baseline's on the same latents: the loss's
relative difference and the largest gradient difference relative to the largest gradient (0.0:
bitwise). Variants alternate round after round; the fastest round counts. The students are
untrained copies of LOMMA's architectures (a step costs the same whatever their weights).

    python benchmarks/search_step.py STUDY_DIR [--preset decisive] [--seed 100] [--rounds 3]
        [--steps 10] [--variants chunks:100,compile,bf16] [--searches gmi,lomma-gmi]

STUDY_DIR: a study folder of the preset holding its prior and the seed's undefended target
(``benchmarks/unit_cost.py`` trains them there if missing).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch


def setup(study: Path, preset_name: str, seed: int, search: str):
    """(loss function of the latents, initial latents) of one search at the preset's size."""
    from re_analysis.attacks import create_attack
    from re_analysis.attacks.lomma import build_student, student_archs
    from re_analysis.attacks.priors import load_prior
    from re_analysis.models.inputs import channels_last
    from re_analysis.models.levers import retain_freed_memory
    from re_analysis.study import StudyPaths, load_preset
    from re_analysis.training import load_classifier

    retain_freed_memory()
    preset = load_preset(preset_name)
    paths = StudyPaths(study)
    targets = sorted(paths.root.glob(f"targets/none-s{seed}-*"))
    priors = sorted((paths.cache / "priors").glob("prior-*"))
    if not targets or not priors:
        raise SystemExit(f"{study}: no targets/none-s{seed}-* or cache/priors/prior-*; run benchmarks/unit_cost.py "
                         "on it first (it trains them)")
    target, prior = load_classifier(targets[0]), load_prior(priors[0])
    params = {k: v for k, v in preset.attacks[search].items() if k not in ("per_class", "distill_epochs")}
    per_class = int(preset.attacks[search].get("per_class", 1))
    labels = torch.arange(target.num_classes).repeat_interleave(per_class)
    attack = create_attack(search, **params)
    models = [target, prior.generator, prior.discriminator]
    lomma = "n_aug" in attack.params
    if lomma:  # LOMMA: the target and its students, untrained (same cost per step)
        torch.manual_seed(0)
        attack.models = [target] + [build_student(a, target.num_classes, 1, 28)
                                    for a in student_archs(getattr(target, "arch", None), 28,
                                                           int(attack.params["n_aug"]))]
        attack.reg_unit = torch.tensor(1.0)  # the regulariser's centre and unit: a cost, whatever their values
        models += attack.models[1:]
    for m in models:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    channels_last(*models)
    attack.setup(target, prior, labels)
    if lomma:  # the public features' mean: zeros of its shape
        with torch.no_grad():
            attack.p_reg = torch.zeros_like(target.features(torch.zeros(1, 1, 28, 28)).flatten(1)[0])
    z0 = torch.randn(len(labels), prior.z_dim, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)

    def rows(z, lab):
        x = prior.generator(z)
        return -prior.discriminator(x).flatten() + attack.params["lam"] * attack.identity_loss(target, x, lab)

    def loss(z):
        return rows(z, labels).sum() / attack.params["identities"]

    return loss, rows, labels, attack.params["identities"], z0


def variants(names, loss, rows, labels, identities):
    """name -> step(z0) returning (loss, gradient)."""

    def eager(z0, fn=loss):
        z = z0.clone().requires_grad_(True)
        out = fn(z)
        out.backward()
        return out.detach().float(), z.grad

    out = {"eager": eager}
    for name in names:
        if name.startswith("chunks:"):
            n = int(name[7:])

            def chunked(z0, n=n):
                z = z0.clone().requires_grad_(True)
                parts = []
                for s in range(0, len(labels), n):
                    r = rows(z[s:s + n], labels[s:s + n])
                    (r.sum() / identities).backward()
                    parts.append(r.detach())
                return torch.cat(parts).sum() / identities, z.grad

            out[name] = chunked
        elif name == "compile":
            compiled = torch.compile(loss)
            out[name] = lambda z0, c=compiled: eager(z0, c)
        elif name == "bf16":
            def bf16(z):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return loss(z).float()

            out[name] = lambda z0, f=bf16: eager(z0, f)
        else:
            raise SystemExit(f"unknown variant {name!r}: chunks:N, compile or bf16")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--preset", default="decisive")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default="chunks:100,compile,bf16")
    ap.add_argument("--searches", default="gmi,lomma-gmi")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s)")
    for search in args.searches.split(","):
        loss, rows, labels, identities, z0 = setup(args.study, args.preset, args.seed, search)
        steps = variants(args.variants.split(","), loss, rows, labels, identities)
        ref_loss, ref_grad = steps["eager"](z0)
        checks = {}
        for name, step in steps.items():
            t0 = time.perf_counter()
            got_loss, got_grad = step(z0)  # also compiles
            first = time.perf_counter() - t0
            rel = float((got_loss - ref_loss).abs() / ref_loss.abs())
            grad = float((got_grad - ref_grad).abs().max() / ref_grad.abs().max())
            checks[name] = (rel, grad, first)
        best = {name: float("inf") for name in steps}
        for r in range(args.rounds):
            for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    steps[name](z0)
                best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
        print(f"\n{search}: {len(labels)} rows, one step (fastest of {args.rounds} rounds of {args.steps})")
        print("| variant | ms per step | eager / variant | loss rel. diff | grad diff / max grad | first call s |")
        print("|---|---|---|---|---|---|")
        for name in steps:
            rel, grad, first = checks[name]
            print(f"| {name} | {best[name] * 1000:.0f} | {best['eager'] / best[name]:.2f} | {rel:.1e} | {grad:.1e} "
                  f"| {first:.1f} |")


if __name__ == "__main__":
    main()
