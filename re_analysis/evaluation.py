"""Evaluate an attack run (privacy metrics) and analyse the feature-space gap.

``evaluate_attack`` -> ``metrics.json``: attack accuracy top-1/top-5 (evaluation model),
KNN distance, FID and precision/recall/density/coverage, all in the evaluation model's
penultimate feature space against the private training images of the attacked classes.

``analyze_gap`` -> ``gap.json`` and figures: target-model features of private images,
of Random-Erased private images (the target's own RE parameters when it was trained with
RE, else MIDRE's defaults) and of reconstructions; :func:`feature_gap`, UMAP with hulls,
and per-class hull overlap.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .artifacts import atomic_write_bytes, atomic_write_json, claim_scope, lock_run_dir, read_json
from .attacks.runner import load_attack_run
from .runs import target_record, target_splits
from .data import materialize
from .defenses import RandomErasing
from .errors import ReAnalysisError
from .features import extract_features, feature_gap, hull_overlap, umap_embed
from .metrics import attack_accuracy, frechet_distance, knn_distance, prdc
from .models.inputs import normalize
from .training import load_classifier


def private_train_images(target_dir: str | Path, classes=None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The target's private training images (uint8) and labels, limited to ``classes``."""
    splits = target_splits(target_record(Path(target_dir)))
    x, y = materialize(splits.private_train)
    if classes is not None:
        keep = torch.isin(y, torch.as_tensor(list(classes)))
        x, y = x[keep], y[keep]
    return x, y, splits


@claim_scope()
def evaluate_attack(attack_run: str | Path, eval_model: str | Path, out_dir: str | Path | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """Privacy metrics of one attack run, written to ``out_dir/metrics.json`` when given."""
    if out_dir is not None:
        lock_run_dir(out_dir)  # one writer of out_dir at a time
    res = load_attack_run(attack_run)
    ev = load_classifier(eval_model, device)
    info = res.info
    ev_info = read_json(Path(eval_model) / "config.json")["config"]
    if ev_info.get("dataset") != info.get("dataset"):
        raise ReAnalysisError(f"the evaluation model was trained on {ev_info.get('dataset')} but the attack targets "
                              f"{info.get('dataset')}; pass an evaluation model of the same private classes")
    acc = attack_accuracy(ev, res.images, res.labels)
    x_priv, y_priv, _ = private_train_images(info["target"], info["classes"])
    f_priv = extract_features(ev, x_priv).numpy()
    f_rec = extract_features(ev, res.images.float()).numpy()
    metrics: dict[str, Any] = {
        "attack_accuracy_top1": acc["top1"], "attack_accuracy_top5": acc["top5"],
        "knn_distance": knn_distance(f_rec, res.labels.numpy(), f_priv, y_priv.numpy()),
        "fid": frechet_distance(f_rec, f_priv) if len(f_rec) >= 2 else float("nan"),
        "n_reconstructions": int(len(res.labels)), "attack": info["attack"], "classes": info["classes"],
        "target_defense": info.get("target_defense"), "eval_model": str(eval_model),
        "attack_run": str(attack_run), "feature_space": "evaluation-model penultimate features",
    }
    k = min(5, len(f_rec) - 1, len(f_priv) - 1)
    metrics.update(prdc(f_priv, f_rec, nearest_k=k) if k >= 1 else
                   {"precision": float("nan"), "recall": float("nan"), "density": float("nan"), "coverage": float("nan")})
    metrics["prdc_nearest_k"] = k
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        existing = read_json(Path(out_dir) / "metrics.json") if (Path(out_dir) / "metrics.json").is_file() else {}
        atomic_write_json(Path(out_dir) / "metrics.json", {**existing, **metrics})
    return metrics


def erasing_for(target_dir: str | Path) -> RandomErasing:
    """The target's own Random Erasing when it trained with it, else MIDRE's default."""
    cfg = target_record(Path(target_dir))["config"]
    if "random-erasing" in str(cfg.get("defense", "")).split("+"):
        p = cfg.get("defense_params", {})
        keys = {"scale", "ratio", "value", "p", "location"}
        return RandomErasing(**{k: v for k, v in p.items() if k in keys})
    return RandomErasing()


@claim_scope()
def analyze_gap(target_dir: str | Path, attack_run: str | Path, out_dir: str | Path | None = None,
                seed: int = 0, max_private_per_class: int = 200, device: str = "cpu",
                embed: bool = True) -> dict[str, Any]:
    """Feature-space gap between private, erased and reconstructed images in the TARGET's features.

    ``embed=False`` skips the UMAP embedding, hull overlaps and figure (the statistics in
    the full feature space are still computed; UMAP is the slow part).
    """
    from .plots import feature_space_figure, save_figure

    if out_dir is not None:
        lock_run_dir(out_dir)  # one writer of out_dir at a time
    res = load_attack_run(attack_run)
    if Path(res.info["target"]).resolve() != Path(target_dir).resolve():
        if res.info.get("target_config_hash") != target_record(Path(target_dir))["config_hash"]:
            raise ReAnalysisError(f"{attack_run} attacked another target than {target_dir}; pass the attacked target")
    model = load_classifier(target_dir, device)
    x, y, splits = private_train_images(target_dir, res.info["classes"])
    g = torch.Generator().manual_seed(seed)
    keep = torch.cat([torch.nonzero(y == c).squeeze(1)[torch.randperm(int((y == c).sum()), generator=g)[:max_private_per_class]]
                      for c in y.unique()])
    x, y = x[keep], y[keep]
    eraser = erasing_for(target_dir)
    erased = eraser(normalize(x), generator=torch.Generator().manual_seed(seed + 1))
    f_priv = extract_features(model, x).numpy()
    f_re = extract_features(model, erased).numpy()
    f_rec = extract_features(model, res.images.float()).numpy()
    y_np, yr = y.numpy(), res.labels.numpy()
    gap = feature_gap(f_priv, y_np, f_re, y_np, f_rec, yr)
    gap.update({"target": str(target_dir), "attack_run": str(attack_run), "target_defense": res.info.get("target_defense"),
                "attack": res.info["attack"], "feature_space": "target-model penultimate features",
                "erasing": repr(eraser)})
    if not embed:
        if out_dir is not None:
            atomic_write_json(Path(out_dir) / "gap.json", gap)
        return gap
    emb = umap_embed(np.concatenate([f_priv, f_re, f_rec]), seed=seed)
    n1, n2 = len(f_priv), len(f_priv) + len(f_re)
    groups = ["private"] * n1 + ["erased"] * len(f_re) + ["reconstruction"] * len(f_rec)
    labels = np.concatenate([y_np, y_np, yr])
    overlap = {}
    for c in np.unique(yr):
        overlap[int(c)] = {"recon_private": hull_overlap(emb[n2:][yr == c], emb[:n1][y_np == c]),
                           "recon_erased": hull_overlap(emb[n2:][yr == c], emb[n1:n2][y_np == c])}
    gap["hull_overlap_recon_private"] = float(np.mean([v["recon_private"] for v in overlap.values()]))
    gap["hull_overlap_recon_erased"] = float(np.mean([v["recon_erased"] for v in overlap.values()]))
    for c, v in overlap.items():
        gap["per_class"][c].update({"hull_overlap_recon_private": v["recon_private"],
                                    "hull_overlap_recon_erased": v["recon_erased"]})
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_json(out / "gap.json", gap)
        buf = io.BytesIO()
        np.savez(buf, embedding=emb, labels=labels, groups=np.array(groups))
        atomic_write_bytes(out / "embedding.npz", buf.getvalue())
        fig = feature_space_figure(emb, groups, labels, splits.private_class_names,
                                   title=f"{res.info['attack']} vs {res.info.get('target_defense')}")
        save_figure(fig, out / "feature_space.png")
    return gap
