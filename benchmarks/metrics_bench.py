"""KNN distance, PRDC and the gap statistics against the methods the field uses, measured
in the same run: wall time and peak memory (each measurement in a fresh subprocess; peak
RSS above the process's RSS once its inputs exist).

(a) knn_distance vs the anchors' per-class ``torch.cdist(...) ** 2`` + min, at growing
    private-set sizes up to CelebA scale (30,000 x 512, 300 classes) and beyond; also the
    reuse case (one PrivateIndex, 20 reconstruction sets).
(b) prdc vs the ``prdc`` package (full N x N and N x M matrices), and feature_gap vs a
    full pairwise-matrix implementation, at 10,000 / 30,000 / 100,000 features. A baseline
    whose matrices would not fit in this machine's memory is reported as skipped.

Usage: python benchmarks/metrics_bench.py [--quick] > table.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make(n, d, classes, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


def run_one(method: str, n: int, d: int, classes: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    priv, py = make(n, d, classes, 0)
    rec, ry = make(classes * 5, d, classes, 1)
    ry = np.arange(classes).repeat(5)
    # libraries are imported before the clock and the memory baseline: both sides are measured warm
    import faiss  # noqa: F401
    import prdc  # noqa: F401
    import re_analysis.features  # noqa: F401
    import re_analysis.metrics  # noqa: F401
    base = rss_mb()
    t0 = time.perf_counter()
    if method == "knn-ours":
        from re_analysis.metrics import knn_distance
        value = knn_distance(priv, py, rec, ry)
    elif method == "knn-anchors":
        vals = []
        for c in np.unique(ry):
            d2 = torch.cdist(torch.from_numpy(rec[ry == c]), torch.from_numpy(priv[py == c])) ** 2
            vals.append(d2.min(1).values)
        value = float(torch.cat(vals).double().mean())
    elif method == "knn-ours-reuse":
        from re_analysis.metrics import PrivateIndex, knn_distance
        index = PrivateIndex(priv, py)
        value = [knn_distance(index, None, rec + 0.01 * k, ry) for k in range(20)][-1]
    elif method == "knn-anchors-reuse":
        for k in range(20):
            vals = []
            for c in np.unique(ry):
                d2 = torch.cdist(torch.from_numpy(rec[ry == c] + 0.01 * k), torch.from_numpy(priv[py == c])) ** 2
                vals.append(d2.min(1).values)
        value = float(torch.cat(vals).double().mean())
    elif method == "prdc-ours":
        from re_analysis.metrics import prdc as prdc_ours
        fake, _ = make(n, d, classes, 2)
        value = prdc_ours(priv, fake + 0.3)["coverage"]
    elif method == "prdc-package":
        import prdc as prdc_pkg
        fake, _ = make(n, d, classes, 2)
        value = float(prdc_pkg.compute_prdc(real_features=priv, fake_features=fake + 0.3, nearest_k=5)["coverage"])
    elif method == "gap-ours":
        from re_analysis.features import feature_gap
        erased, _ = make(n, d, classes, 3)
        value = feature_gap(priv, py, erased, py, rec, ry)["fraction_nearer_erased"]
    elif method == "gap-fullmatrix":
        erased, _ = make(n, d, classes, 3)
        R, P, E = (torch.from_numpy(a).double() for a in (rec, priv, erased))
        same = torch.from_numpy(ry)[:, None] == torch.from_numpy(py)[None, :]
        dp = torch.where(same, torch.cdist(R, P) ** 2, torch.inf).min(1).values
        de = torch.where(same, torch.cdist(R, E) ** 2, torch.inf).min(1).values
        full = torch.cdist(P, P)  # coverage needs private k-NN radii: the full N x N matrix
        value = float((de < dp).double().mean()) + 0 * float(full[0, 0])
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    return {"method": method, "n": n, "d": d, "classes": classes, "seconds": seconds,
            "peak_mb": max(peak_mb() - base, 0.0), "value": value if not isinstance(value, list) else value}


def measure(method, n, d, classes, timeout=900):
    proc = subprocess.run([sys.executable, __file__, "--one", method, str(n), str(d), str(classes)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"method": method, "n": n, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fits(n: int, matrices: int, bytes_per: int = 8, budget_gb: float = 12.0) -> bool:
    return n * n * bytes_per * matrices / 1e9 <= budget_gb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=4)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.one:
        m, n, d, c = args.one
        print(json.dumps(run_one(m, int(n), int(d), int(c))))
        return
    rows = []
    knn_sizes = [(3_000, 512, 30), (30_000, 512, 300), (100_000, 512, 1000)]
    prdc_sizes = [(10_000, 64, 100), (30_000, 64, 300), (100_000, 64, 1000)]
    if args.quick:
        knn_sizes, prdc_sizes = knn_sizes[:2], prdc_sizes[:1]
    for n, d, c in knn_sizes:
        for ours, base in (("knn-ours", "knn-anchors"), ("knn-ours-reuse", "knn-anchors-reuse")):
            rows.append((measure(base, n, d, c), measure(ours, n, d, c)))
    for n, d, c in prdc_sizes:
        # prdc holds real-real, fake-fake and real-fake float32 matrices (sklearn pairwise_distances)
        base = measure("prdc-package", n, d, c) if fits(n, 3, 4) else {"method": "prdc-package", "n": n,
                                                                        "error": f"skipped: needs ~{3 * 4 * n * n / 1e9:.0f} GB"}
        rows.append((base, measure("prdc-ours", n, d, c)))
        base = measure("gap-fullmatrix", n, d, c) if fits(n, 1, 4) else {"method": "gap-fullmatrix", "n": n,
                                                                          "error": f"skipped: needs ~{4 * n * n / 1e9:.0f} GB"}
        rows.append((base, measure("gap-ours", n, d, c)))
    print("| task | n x d (classes) | baseline | baseline s | baseline peak MB | ours | ours s | ours peak MB | time ratio | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b, o in rows:
        size = f"{o['n']:,} x {o.get('d', '')} ({o.get('classes', '')})"
        if "error" in b:
            print(f"| {o['method'].split('-')[0]} | {size} | {b['method']} | {b['error']} | | {o['method']} | "
                  f"{o['seconds']:.2f} | {o['peak_mb']:.0f} | - | - |")
            continue
        tr = b["seconds"] / o["seconds"]
        mr = b["peak_mb"] / o["peak_mb"] if o["peak_mb"] > 1 else float("nan")
        print(f"| {o['method'].split('-')[0]} | {size} | {b['method']} | {b['seconds']:.2f} | {b['peak_mb']:.0f} | "
              f"{o['method']} | {o['seconds']:.2f} | {o['peak_mb']:.0f} | {tr:.2f}x | {mr:.1f}x |")


if __name__ == "__main__":
    main()
