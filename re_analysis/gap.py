"""The feature-space gap of one attack run: where its reconstructions land in the TARGET's features.

``analyze_gap`` -> ``gap.json`` and figures: target-model features of private images, of
Random-Erased private images (the target's own RE parameters when it was trained with RE,
else MIDRE's defaults) and of reconstructions; :func:`re_analysis.features.feature_gap` (raw
and normalised by the target's own scale), :func:`re_analysis.features.class_separation` of
the private classes, UMAP with hulls (other classes in grey), and per-class hull overlap.
MIDRE's explanation of the defense (Sec. 5): reconstructions of an RE-trained target land
nearer the erased images' features than the private ones'.

Example:
    >>> gap = analyze_gap("runs/target-re", "runs/gmi-re", "runs/gmi-re")  # doctest: +SKIP
    >>> gap["fraction_nearer_erased"], gap["separation_margin"]  # doctest: +SKIP
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text, lock_run_dir
from .attacks.runner import load_attack_run
from .data import materialize
from .defenses import RandomErasing
from .errors import ReAnalysisError
from .evaluation import file_key, inference_copy, private_train_images, reused
from .features import class_separation, extract_features, feature_gap, hull_overlap, umap_embed
from .features.separation import heldout_margins
from .models.inputs import normalize
from .models.levers import lever
from .runs import target_record
from .training import load_classifier

__all__ = ["GAP_KEYS", "analyze_gap", "private_side", "PrivateSide", "erasing_for", "collapsed"]

#: The gap's statistics a study's results keep (each NaN, with a note, when the target's features collapsed).
GAP_KEYS = ("mean_dist_private", "mean_dist_erased", "mean_dist_private_normalized", "mean_dist_erased_normalized",
            "fraction_nearer_erased", "coverage_private", "separation_margin", "separation_nn_purity",
            "separation_silhouette")


def erasing_for(target_dir: str | Path) -> RandomErasing:
    """The target's own Random Erasing (its ablation's too: area, Partial Erasure, fixed
    location) when it trained with one, else MIDRE's default (what RE would have hidden)."""
    from .defenses import eraser_of

    cfg = target_record(Path(target_dir))["config"]
    return eraser_of(cfg.get("defense", "none"), cfg.get("defense_params", {})) or RandomErasing()


def collapsed(features: np.ndarray) -> bool:
    """Whether every feature vector is the same (a target whose training died: its ReLUs
    output zero for every image), so there is no feature space to measure distances in."""
    return bool(len(features) == 0 or np.ptp(features, axis=0).max() == 0)


def collapsed_gap(res, target_dir, attack_run, out_dir, f_priv, labels, t0) -> dict:
    """The gap record of a target whose features collapsed: every statistic NaN, with the reason."""
    nan = float("nan")
    note = ("the target's penultimate features are identical for every private image (its training collapsed): "
            "there is no feature space to measure the gap in")
    gap = {k: nan for k in GAP_KEYS}
    gap.update({"per_class": {}, "note": note, "target": str(target_dir), "attack_run": str(attack_run),
                "target_defense": res.info.get("target_defense"), "attack": res.info["attack"],
                "feature_space": "target-model penultimate features", "n_private": int(len(f_priv)),
                "seconds": round(time.perf_counter() - t0, 3)})
    if out_dir is not None:
        rows = pd.DataFrame({"index": np.arange(len(labels)), "label": labels, "d_private": nan, "d_erased": nan,
                             "nearer_erased": nan})
        atomic_write_text(Path(out_dir) / "gap_samples.csv", rows.to_csv(index=False))
        atomic_write_json(Path(out_dir) / "gap.json", gap)
    return gap


@dataclass
class PrivateSide:
    """What the gap of every attack on one target shares: the target (as read), the private
    images' labels, their features and their Random-Erased twins' (``f_priv``, ``f_re``), how
    far the private classes stay apart (``separation``, without per-point margins, which
    ``point_rows`` hold with the held-out ones) and the held-out margin's mean."""

    model: torch.nn.Module
    splits: Any
    eraser: Any
    y: np.ndarray
    f_priv: np.ndarray
    f_re: np.ndarray
    separation: dict | None
    point_rows: pd.DataFrame | None
    test_margin: float | None


def private_side(target_dir: str | Path, classes, seed: int, max_private_per_class: int, device: str) -> PrivateSide:
    """The reconstruction-independent half of :func:`analyze_gap` (up to ``max_private_per_class``
    private training images per attacked class, drawn with ``seed``; erased with ``seed + 1``)."""
    model = inference_copy(load_classifier(target_dir, device))
    x, y, splits = private_train_images(target_dir, classes)
    g = torch.Generator().manual_seed(seed)
    keep = torch.cat([torch.nonzero(y == c).squeeze(1)[torch.randperm(int((y == c).sum()), generator=g)[:max_private_per_class]]
                      for c in y.unique()])
    x, y = x[keep], y[keep]
    eraser = erasing_for(target_dir)
    erased = eraser(normalize(x), generator=torch.Generator().manual_seed(seed + 1))
    f_priv = extract_features(model, x).numpy()
    f_re = extract_features(model, erased).numpy()
    y_np = y.numpy()
    sep, point_rows, test_margin = None, None, None
    if not collapsed(f_priv) and len(np.unique(y_np)) >= 2:
        sep = class_separation(f_priv, y_np, per_point=True)
        point_rows = pd.DataFrame({"index": np.arange(len(y_np)), "label": y_np, "margin": sep.pop("margins"),
                                   "split": "train"})
        xt, yt = materialize(splits.private_test)
        held = torch.isin(yt, torch.as_tensor(np.unique(y_np)))
        if held.any():  # the test images of the attacked classes, against the training features
            yt_np = yt[held].numpy()
            margins = heldout_margins(f_priv, y_np, extract_features(model, xt[held]).numpy(), yt_np)
            point_rows = pd.concat([point_rows, pd.DataFrame({"index": np.arange(len(yt_np)), "label": yt_np,
                                                              "margin": margins, "split": "test"})])
            test_margin = float(margins.mean())
    return PrivateSide(model, splits, eraser, y_np, f_priv, f_re, sep, point_rows, test_margin)


def analyze_gap(target_dir: str | Path, attack_run: str | Path, out_dir: str | Path | None = None,
                seed: int = 0, max_private_per_class: int = 200, device: str = "cpu",
                embed: bool = True) -> dict[str, Any]:
    """Feature-space gap between private, erased and reconstructed images in the TARGET's
    features, and how far the private classes stay apart (``separation_*`` keys).

    ``embed=False`` skips the UMAP embedding, hull overlaps and figure (the statistics in
    the full feature space are still computed; UMAP is the slow part).
    """
    from .plots import feature_space_figure, save_figure

    if out_dir is not None:
        lock_run_dir(out_dir)  # one writer of out_dir at a time
    t0 = time.perf_counter()
    res = load_attack_run(attack_run)
    if Path(res.info["target"]).resolve() != Path(target_dir).resolve():
        if res.info.get("target_config_hash") != target_record(Path(target_dir))["config_hash"]:
            raise ReAnalysisError(f"{attack_run} attacked another target than {target_dir}; pass the attacked target")
    side = reused(("gap", file_key(target_dir), tuple(int(c) for c in res.info["classes"]), seed, max_private_per_class,
                   str(device), lever("channels_last_inference"), lever("fold_batchnorm")),
                  lambda: private_side(target_dir, res.info["classes"], seed, max_private_per_class, device))
    model, splits, eraser, f_priv, f_re, y_np = side.model, side.splits, side.eraser, side.f_priv, side.f_re, side.y
    f_rec = extract_features(model, res.images.float()).numpy()
    yr = res.labels.numpy()
    if collapsed(f_priv):
        return collapsed_gap(res, target_dir, attack_run, out_dir, f_priv, yr, t0)
    gap = feature_gap(f_priv, y_np, f_re, y_np, f_rec, yr, per_sample=True)
    samples = gap.pop("samples")
    recon_rows = pd.DataFrame({"index": np.arange(len(yr)), "label": yr, **samples})
    point_rows = side.point_rows
    if side.separation is not None:
        sep = side.separation
        if side.test_margin is not None:
            gap["separation_margin_test"] = side.test_margin
        gap.update({"separation_margin": sep["margin"], "separation_nn_purity": sep["nn_purity"],
                    "separation_silhouette": sep["silhouette"]})
        for c, v in sep["per_class"].items():
            if c in gap["per_class"]:
                gap["per_class"][c].update({f"separation_{k}": val for k, val in v.items()})
    if out_dir is not None:  # per-item tables: the paired comparisons across defenses read them
        atomic_write_text(Path(out_dir) / "gap_samples.csv", recon_rows.to_csv(index=False))
        if point_rows is not None:
            atomic_write_text(Path(out_dir) / "separation_samples.csv", point_rows.to_csv(index=False))
    gap.update({"target": str(target_dir), "attack_run": str(attack_run), "target_defense": res.info.get("target_defense"),
                "attack": res.info["attack"], "feature_space": "target-model penultimate features",
                "erasing": repr(eraser), "private_per_class": max_private_per_class})
    if not embed:
        gap["seconds"] = round(time.perf_counter() - t0, 3)
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
    gap["seconds"] = round(time.perf_counter() - t0, 3)
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
