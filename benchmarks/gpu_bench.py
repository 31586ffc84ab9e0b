"""GPU speed, measured against baselines in the same run (CUDA events; medians of repeats).

1. Per-sample Random Erasing on device vs torchvision's RandomErasing called per image.
2. Training throughput (images/s) of VGG16 and IR152 at 64 px, 1,000 classes (the CelebA
   setting): plain fp32 vs bf16 autocast + channels_last (+ torch.compile for VGG16).
3. Attack iterations/s of GMI at 64 px against VGG16: 300 classes x 5 restarts in one
   batch vs the per-class loop the reference code runs, and fp32 vs bf16.

Usage: python benchmarks/gpu_bench.py --out results.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from re_analysis import RandomErasing, create_model
from re_analysis.attacks.gan import Discriminator, Generator


def cuda_time(fn, repeats=5, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def bench_erasing(rows):
    for n, size in ((512, 64), (256, 224)):
        x = torch.randn(n, 3, size, size, device="cuda")
        ours = RandomErasing()
        g = torch.Generator(device="cuda").manual_seed(0)
        tv = v2.RandomErasing(p=1.0, scale=(0.1, 0.4), ratio=(1, 1), value=0.485)
        t_ours = cuda_time(lambda: ours(x, generator=g))
        t_tv = cuda_time(lambda: torch.stack([tv(img) for img in x]), repeats=3, warmup=1)
        rows.append({"benchmark": f"random erasing, batch {n} x 3 x {size}^2", "baseline": "torchvision per image",
                     "baseline_s": t_tv, "ours_s": t_ours, "speedup": t_tv / t_ours,
                     "ours_throughput": f"{n / t_ours:,.0f} img/s"})


def train_step_fn(model, x, y, opt, amp):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bench_training(rows, batch=128, classes=1000):
    for arch in ("vgg16", "ir152"):
        results = {}
        for mode in ("fp32", "amp+cl", "amp+cl+compile"):
            if mode.endswith("compile") and arch != "vgg16":
                continue
            torch.manual_seed(0)
            model = create_model(arch, classes, 3, 64).cuda()
            x = torch.randn(batch, 3, 64, 64, device="cuda")
            y = torch.randint(0, classes, (batch,), device="cuda")
            if mode != "fp32":
                model = model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            run = torch.compile(model) if mode.endswith("compile") else model
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            t0 = time.perf_counter()
            step = train_step_fn(run, x, y, opt, amp=mode != "fp32")
            step()
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            t = cuda_time(lambda: [step() for _ in range(10)], repeats=3, warmup=1) / 10
            results[mode] = t
            rows.append({"benchmark": f"train {arch} 64px b{batch}", "baseline": "fp32", "mode": mode,
                         "baseline_s": results.get("fp32", t), "ours_s": t, "speedup": results.get("fp32", t) / t,
                         "ours_throughput": f"{batch / t:,.0f} img/s", "first_step_s": round(first, 2)})
            del model, run, opt
            torch.cuda.empty_cache()


def bench_attack(rows, classes=300, restarts=5):
    torch.manual_seed(0)
    target = create_model("vgg16", 1000, 3, 64).cuda().eval().to(memory_format=torch.channels_last)
    g, d = Generator(64, 3, 100, 64).cuda().eval(), Discriminator(64, 3, 64).cuda().eval()
    for p in list(target.parameters()) + list(g.parameters()) + list(d.parameters()):
        p.requires_grad_(False)

    def gmi_iteration(z, y, amp):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            x = g(z)
            loss = -d(x).mean() + 100 * F.cross_entropy(target(x), y)
        loss.backward()

    labels = torch.arange(classes, device="cuda").repeat_interleave(restarts)
    z = torch.randn(len(labels), 100, device="cuda", requires_grad=True)
    t_batched_fp32 = cuda_time(lambda: gmi_iteration(z, labels, False), repeats=5)
    t_batched_amp = cuda_time(lambda: gmi_iteration(z, labels, True), repeats=5)
    zs = [torch.randn(restarts, 100, device="cuda", requires_grad=True) for _ in range(classes)]
    ys = [torch.full((restarts,), c, device="cuda") for c in range(classes)]
    t_loop = cuda_time(lambda: [gmi_iteration(zc, yc, True) for zc, yc in zip(zs, ys)], repeats=2, warmup=1)
    rows.append({"benchmark": f"GMI iteration, {classes} classes x {restarts}", "baseline": "per-class loop (bf16)",
                 "baseline_s": t_loop, "ours_s": t_batched_amp, "speedup": t_loop / t_batched_amp,
                 "ours_throughput": f"{1 / t_batched_amp:,.1f} it/s"})
    rows.append({"benchmark": f"GMI iteration, {classes} classes x {restarts}", "baseline": "batched fp32",
                 "baseline_s": t_batched_fp32, "ours_s": t_batched_amp, "speedup": t_batched_fp32 / t_batched_amp,
                 "ours_throughput": f"{1 / t_batched_amp:,.1f} it/s"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_bench.md")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    rows: list[dict] = []
    for fn in (bench_erasing, bench_training, bench_attack):
        t0 = time.perf_counter()
        fn(rows)
        print(f"{fn.__name__} done in {time.perf_counter() - t0:.0f}s", flush=True)
    name = torch.cuda.get_device_name(0)
    lines = [f"GPU: {name}; torch {torch.__version__}", "",
             "| benchmark | baseline | mode | baseline s | ours s | speedup | ours throughput |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['baseline']} | {r.get('mode', '')} | {r['baseline_s']:.4f} | "
                     f"{r['ours_s']:.4f} | {r['speedup']:.1f}x | {r['ours_throughput']} |")
    text = "\n".join(lines)
    print(text)
    with open(args.out, "w") as fh:
        fh.write(text + "\n")
    with open(args.out.replace(".md", ".json"), "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
