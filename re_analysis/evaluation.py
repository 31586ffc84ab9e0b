"""Evaluate an attack run under every judge (:data:`re_analysis.metrics.judges.JUDGE_TABLE`).

``evaluate_attack`` -> ``metrics.json``, ``judgements.csv`` (one row per reconstruction,
one column per verdict, so intervals and agreement can be computed) and ``gallery.png``:

- each judge's verdict (:func:`judge_images` asks every :class:`~re_analysis.metrics.judges.JudgeSpec`
  of the table): the open-set evaluation model of another architecture than the target
  (trained on the private AND public classes: a public identity is a miss) and its
  closed-set verdict (the field's convention), the robust one (adversarially trained, PGD;
  Madry et al. 2018, which Type-I adversarial reconstructions, Ho et al. arXiv 2505.03519,
  do not pass), the pixel judge (majority label of the nearest private and public training
  images, with a reject option), and any judge registered since;
- their agreement, the target's own accuracy on the reconstructions, each judge's ceiling
  (its acceptance of held-out private images), and the **chance baseline**: the same judges
  on unoptimised prior samples the target already labels as each class (what the attack gets
  for free);
- KNN distance, FID (with its sample counts) and per-class PRDC (k = 3), in the standard
  judge's penultimate features against the private training images of the attacked classes,
  over the reconstructions the attack did not give up on (BREP-MI's failed rows are misses
  under every judge and left out of these, their number reported as
  ``distribution_n_excluded``).

The feature-space gap is :mod:`re_analysis.gap`; intervals and paired comparisons over many
runs' judgements are :func:`re_analysis.metrics.stats.judgement_intervals` and
:func:`~re_analysis.metrics.stats.compare_with_none`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .artifacts import atomic_write_json, atomic_write_text, claim_scope, lock_run_dir, read_json
from .attacks.runner import load_attack_run
from .data import materialize
from .errors import ReAnalysisError
from .features import extract_features
from .metrics import frechet_distance, judge_agreement, knn_distance, prdc_per_class, reject_radius
from .metrics.judges import JUDGE_TABLE, JudgeBench, agreement_columns, score_images, scored_names
from .models.frozen import frozen
from .models.inputs import normalize, predict_logits
from .models.levers import lever, retain_freed_memory
from .runs import target_record, target_splits
from .training import load_classifier

PIXEL_K = 5
REJECT_QUANTILE = 0.999
CHANCE_PER_CLASS = 200  # unoptimised prior samples per attacked class: chance gets its own interval
# Draws at most. The target accepts about 1 in (number of classes) prior samples for a class on
# average, but the acceptance is skewed: on glyphs (100 classes, 40 attacked) 400,000 draws (200 s
# on a core) still left some class without a sample, and 100,000 took 45 of an evaluation's 67 s.
# 50,000 fill 200 per class for every class accepted at 1 in 250 or more (the typical class: 1 in
# 100); rarer classes keep what they got (``chance_min_per_class``), each class weighing the same
# in the chance rate.
CHANCE_MAX_SAMPLES = 50_000


_REUSED: dict = {}  # the reuse_evaluation lever's memo: key -> value, oldest first
REUSE_MAX = 6


def reused(key: tuple, compute):
    """``compute()``, or its value from an earlier call with the same ``key`` in this process
    (lever ``reuse_evaluation``: bitwise the same, since the same inputs give the same result).
    At most :data:`REUSE_MAX` values are kept; callers must not modify what they get."""
    if not lever("reuse_evaluation"):
        return compute()
    if key in _REUSED:
        _REUSED[key] = _REUSED.pop(key)  # most recently used last
        return _REUSED[key]
    value = compute()
    _REUSED[key] = value
    while len(_REUSED) > REUSE_MAX:
        _REUSED.pop(next(iter(_REUSED)))
    return value


def clear_reused() -> None:
    """Forget what :func:`reused` kept (benchmarks compare paths from a cold start)."""
    _REUSED.clear()


def file_key(path: str | Path | None) -> tuple | None:
    """A run folder as a memo key: its resolved path and its weights files' sizes and times
    (a folder retrained in place is another key)."""
    if path is None:
        return None
    path = Path(path).resolve()
    stats = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.glob("*.safetensors")))
    return (str(path), stats)


def data_key(target_rec: dict) -> tuple:
    """What decides a target's splits (:func:`re_analysis.runs.target_splits`), as a memo key."""
    import json

    t = target_rec["config"]
    return tuple(json.dumps(t.get(k), sort_keys=True, default=str)
                 for k in ("dataset", "root", "seed", "image_size", "dataset_params", "data"))


def inference_copy(model):
    """The model as judges and chance samples read it: a frozen channels_last copy under the
    ``channels_last_inference`` lever, else the model itself."""
    return frozen(model, inference=True) if lever("channels_last_inference") else model


@dataclass
class Judge:
    """A trained evaluation model and what the verdicts need to know about it."""

    model: torch.nn.Module
    num_private: int
    arch: str
    record: dict[str, Any]  # the training run's metrics.json
    run_dir: Path


@dataclass
class TrainingImages:
    """The pixel judge's memory: private training images and public images (uint8)."""

    private: torch.Tensor
    private_labels: torch.Tensor
    public: torch.Tensor
    public_labels: torch.Tensor
    num_private: int
    reject_sq_distance: float | None


def private_train_images(target_dir: str | Path, classes=None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The target's private training images (uint8) and labels, limited to ``classes``."""
    splits = target_splits(target_record(Path(target_dir)))
    x, y = materialize(splits.private_train)
    if classes is not None:
        keep = torch.isin(y, torch.as_tensor(list(classes)))
        x, y = x[keep], y[keep]
    return x, y, splits


def load_judge(run_dir: str | Path, target_rec: dict, device: str = "cpu") -> Judge:
    """Load an evaluation model for judging attacks on the target of ``target_rec``; refuses
    one trained on other data or of the target's own architecture."""
    run_dir = Path(run_dir)
    model = load_classifier(run_dir, device)
    info = model.train_info
    cfg = read_json(run_dir / "config.json")["config"]
    target = target_rec["config"]
    if cfg.get("dataset") != target.get("dataset"):
        raise ReAnalysisError(f"the evaluation model was trained on {cfg.get('dataset')} but the attack targets "
                              f"{target.get('dataset')}; pass an evaluation model of the same private classes")
    if info["arch"] == target.get("arch"):
        raise ReAnalysisError(f"the evaluation model {run_dir} is a {info['arch']}, the target's own architecture: such "
                              "a judge accepts what fools the target; train one with another architecture "
                              "(`re-analysis train --role eval` picks one by image size)")
    record = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    return Judge(model, int(info.get("num_private_classes") or info["num_classes"]), info["arch"], record, run_dir)


def training_images(splits, reject_quantile: float | None = REJECT_QUANTILE) -> TrainingImages:
    """The private training and public images of ``splits`` for the pixel judge, with the
    reject radius fixed on them (``reject_quantile=None``: no reject option)."""
    xp, yp = materialize(splits.private_train)
    xq, yq = materialize(splits.public)
    radius = reject_radius(torch.cat([xp, xq]), reject_quantile) if reject_quantile is not None else None
    return TrainingImages(xp, yp, xq, yq, splits.num_classes, radius)


def judge_images(images: torch.Tensor, labels: torch.Tensor, evaluator: Judge, robust: Judge | None,
                 memory: TrainingImages, target=None, pixel_k: int = PIXEL_K) -> pd.DataFrame:
    """Every judge's verdict on every image, one row per image (``judgements.csv``): ``label``,
    then each judge of :data:`~re_analysis.metrics.judges.JUDGE_TABLE` in turn, its columns
    from its score function: the open-set evaluation model's ``eval_pred``, ``hit_top1``,
    ``eval_public`` (top-1 is a public class) and ``hit_top5`` (with more than 10 private
    classes); the robust one's ``robust_pred``, ``hit_robust``, ``robust_public``; the pixel
    judge's ``pixel_pred`` (-1: rejected), ``hit_pixel``, ``pixel_nearest_public``,
    ``pixel_public``, ``pixel_rejected``, ``pixel_nearest_sq_distance``,
    ``pixel_nearest_index`` (row in private training, then public images); the closed-set
    ``hit_top1_closed`` (``hit_top5_closed``); then ``hit_target`` (the target's own
    verdict) and ``all_accept`` (every agreement judge present accepts).
    """
    y = labels.long().cpu()
    bench = JudgeBench(images, y, evaluator, robust, memory, pixel_k)
    df = pd.DataFrame({"label": y.numpy(), **score_images(bench)})
    if target is not None:
        df["hit_target"] = (predict_logits(target, images).argmax(1) == y).numpy()
    df["all_accept"] = df[agreement_columns(df.columns)].all(axis=1)
    return df


def attack_failures(info: dict, n: int, key: str = "failed") -> np.ndarray:
    """Per reconstruction, whether the attack itself reported it as failed (BREP-MI: a
    point whose radius never grew), from the chunks' run info in ``attack.json``; ``key``
    reads another per-row flag (BREP-MI's ``no_initial_point``)."""
    parts = [np.asarray(c[key], bool) for c in info.get("run_info") or [] if key in c]
    failed = np.concatenate(parts) if parts else np.zeros(n, bool)
    if len(failed) != n:
        raise ReAnalysisError(f"attack.json lists {len(failed)} {key!r} flags for {n} reconstructions; "
                              "the attack run is damaged: delete it and run the attack again")
    return failed


def attack_notes(info: dict) -> list[str]:
    """What the attack's chunks said about their run (BREP-MI: classes without an initial point)."""
    return [c["note"] for c in info.get("run_info") or [] if c.get("note")]


def count_failures_as_misses(df: pd.DataFrame, failed: np.ndarray) -> pd.DataFrame:
    """``df`` with an ``attack_failed`` column and every judge's hit set to False on those rows:
    a reconstruction the attack itself gave up on is a miss, as the official code scores it."""
    df = df.assign(attack_failed=failed)
    hits = [c for c in df.columns if c.startswith("hit_") and c != "hit_target"] + ["all_accept"]
    df.loc[failed, hits] = False
    return df


@torch.no_grad()
def accepted_prior_images(prior, target, classes, per_class: int, seed: int = 0, batch_size: int = 4096,
                          max_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Unoptimised prior samples (z ~ N(0, I); a conditional prior is asked for each class)
    that the target labels as each class, ``per_class`` per class at most: the images an
    attack starts from. Stops after ``max_samples`` draws (default ``CHANCE_MAX_SAMPLES``).
    Returns images, labels and how many samples were drawn."""
    max_samples = CHANCE_MAX_SAMPLES if max_samples is None else int(max_samples)
    device = next(prior.generator.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 4_242)
    conditional = getattr(prior.generator, "num_classes", 0) > 0
    need = {int(c): per_class for c in classes}
    kept_x, kept_y, drawn = [], [], 0
    while any(need.values()) and drawn < max_samples:
        z = torch.randn(batch_size, prior.z_dim, device=device, generator=gen)
        if conditional:
            wanted = torch.tensor([c for c, n in need.items() if n > 0], device=device)
            asked = wanted[torch.arange(batch_size, device=device) % len(wanted)]
            x = prior.generator(z, asked).float()
        else:
            x = prior.generator(z).float()
        pred = predict_logits(target, x).argmax(1).to(device)
        if conditional:
            pred = torch.where(pred == asked, pred, torch.full_like(pred, -1))
        drawn += batch_size
        for c in [c for c, n in need.items() if n > 0]:
            rows = (pred == c).nonzero().squeeze(1)[:need[c]]
            kept_x.append(x[rows].cpu())
            kept_y.append(torch.full((len(rows),), c, dtype=torch.long))
            need[c] -= len(rows)
    if not kept_x:
        return torch.empty(0), torch.empty(0, dtype=torch.long), drawn
    return torch.cat(kept_x), torch.cat(kept_y), drawn


def chance_baseline(info: dict, target, evaluator: Judge, robust: Judge | None, memory: TrainingImages,
                    device: str = "cpu", seed: int = 0, pixel_k: int = PIXEL_K,
                    per_class: int = CHANCE_PER_CLASS) -> tuple[dict[str, Any], pd.DataFrame]:
    """Attack accuracy of unoptimised prior samples under every judge (``chance_*`` keys; NaN
    with a reason when the attack's prior is not on disk), from ``per_class`` samples the
    target accepts for each attacked class, and their per-sample verdicts (the table
    ``chance_judgements.csv``: the chance rate's own interval is computed from it)."""
    from .attacks.priors import load_prior

    nan = {j.chance: float("nan") for j in JUDGE_TABLE}
    prior_dir = info.get("prior")
    if not prior_dir or not (Path(prior_dir) / "prior.json").is_file():
        return {**nan, "chance_n": 0, "chance_note": f"the attack's prior {prior_dir!r} is not on disk"}, pd.DataFrame()
    prior = load_prior(prior_dir, device)
    if lever("channels_last_inference"):
        prior.generator = inference_copy(prior.generator)
    x, y, drawn = accepted_prior_images(prior, target, info["classes"], max(per_class, int(info["per_class"])), seed)
    if len(y) == 0:
        return {**nan, "chance_n": 0, "chance_drawn": drawn,
                "chance_note": "the target labelled no prior sample as an attacked class"}, pd.DataFrame()
    df = judge_images(x, y, evaluator, robust, memory, pixel_k=pixel_k)
    classes = np.asarray(info["classes"], dtype=np.int64)
    counts = np.bincount(y.numpy(), minlength=int(classes.max()) + 1)[classes]
    return {**{j.chance: float(df[j.column].mean()) if j.column in df else float("nan") for j in JUDGE_TABLE},
            "chance_n": int(len(y)), "chance_drawn": drawn, "chance_classes_found": int(y.unique().numel()),
            "chance_min_per_class": int(counts.min())}, df


@torch.no_grad()
def judge_ceilings(evaluator: Judge, robust: Judge | None, memory: TrainingImages, splits,
                   pixel_k: int = PIXEL_K) -> dict[str, float]:
    """Each judge's acceptance of HELD-OUT private images (the private test split): what a
    perfect reconstruction would score, the ceiling beside each attack accuracy
    (``ceiling_<judge>``)."""
    x, y = materialize(splits.private_test)
    if len(y) == 0:
        return {}
    df = judge_images(x.float().div(127.5).sub(1), y, evaluator, robust, memory, pixel_k=pixel_k)
    return {j.ceiling: float(df[j.column].mean()) for j in JUDGE_TABLE if j.column in df} | {"ceiling_n": int(len(y))}


def judge_summary(df: pd.DataFrame) -> dict[str, Any]:
    """metrics.json's attack-accuracy keys from the per-reconstruction verdicts: each judge's
    (and its companions') ``attack_accuracy_<name>`` (NaN for a judge absent), their agreement,
    and the shares behind it."""
    mean = lambda c: float(df[c].mean()) if c in df else float("nan")  # noqa: E731
    agreeing = agreement_columns(df.columns)
    agree = judge_agreement(*[df[c] for c in agreeing])
    return {
        **{f"attack_accuracy_{name}": mean(f"hit_{name}") for name in scored_names()},
        "judges_all_accept": agree["all_accept"], "judges_disagree": agree["disagree"],
        "judges": [c.removeprefix("hit_") for c in agreeing],
        "eval_judged_public": mean("eval_public"), "robust_judged_public": mean("robust_public"),
        "pixel_judged_public": mean("pixel_public"), "pixel_nearest_public": mean("pixel_nearest_public"),
        "pixel_rejected": mean("pixel_rejected"), "target_accuracy_on_reconstructions": mean("hit_target"),
        "attack_failed": mean("attack_failed") if "attack_failed" in df else 0.0,
    }


def judge_record(prefix: str, judge: Judge | None) -> dict[str, Any]:
    """The judge's own quality, recorded with every result (NaN when absent)."""
    if judge is None:
        return {f"{prefix}_model": None, f"{prefix}_natural_accuracy": float("nan")}
    r = judge.record
    out = {f"{prefix}_model": str(judge.run_dir), f"{prefix}_arch": judge.arch,
           f"{prefix}_natural_accuracy": r.get("natural_accuracy", float("nan")),
           f"{prefix}_natural_accuracy_closed": r.get("natural_accuracy_closed", r.get("natural_accuracy", float("nan"))),
           f"{prefix}_open_set": bool(r.get("open_set", False))}
    if "pgd_accuracy" in r:
        out.update({f"{prefix}_pgd_accuracy": r["pgd_accuracy"], f"{prefix}_pgd_eps": r["adversarial"]["eps"],
                    f"{prefix}_pgd_train_steps": r["adversarial"]["steps"],
                    f"{prefix}_pgd_train_epochs": r.get("epochs"),
                    # fine-tuned from a trained judge (its natural accuracy) or trained from random weights
                    f"{prefix}_finetuned_from_accuracy": (r.get("init_from") or {}).get("natural_accuracy")})
    return out


def distribution_metrics(evaluator: Judge, images: torch.Tensor, labels: torch.Tensor, x_priv: torch.Tensor,
                         y_priv: torch.Tensor, failed: np.ndarray | None = None) -> dict[str, Any]:
    """KNN distance, FID (with its sample counts) and per-class PRDC (k = 3) in the
    evaluation model's penultimate features, over the reconstructions not ``failed`` (a
    reconstruction the attack gave up on is a miss, not a sample of what it recovers; as
    the official BREP-MI scores only rows whose radius grew); ``distribution_n_excluded``
    counts those left out. NaN where no reconstruction remains."""
    failed = np.zeros(len(labels), bool) if failed is None else np.asarray(failed, bool)
    if len(failed) != len(labels):
        raise ReAnalysisError(f"{len(failed)} failure flags for {len(labels)} reconstructions")
    kept = torch.from_numpy(~failed)
    images, labels = images[kept], labels[kept]
    f_priv = extract_features(evaluator.model, x_priv).numpy()
    yr, yp = labels.numpy(), y_priv.numpy()
    nan = float("nan")
    if len(labels):
        f_rec = extract_features(evaluator.model, images.float()).numpy()
        pr = prdc_per_class(f_priv, yp, f_rec, yr, nearest_k=3)
        knn = knn_distance(f_priv, yp, f_rec, yr)
        fid = frechet_distance(f_rec, f_priv) if len(f_rec) >= 2 else nan
    else:
        pr = {"precision": nan, "recall": nan, "density": nan, "coverage": nan, "nearest_k": 3, "classes": 0}
        knn, fid = nan, nan
    return {"knn_distance": knn, "fid": fid,
            "fid_n_reconstructions": int(len(labels)), "fid_n_private": int(len(f_priv)),
            "distribution_n_excluded": int(failed.sum()),
            **{k: pr[k] for k in ("precision", "recall", "density", "coverage")},
            "prdc_nearest_k": pr["nearest_k"], "prdc_classes": pr["classes"],
            "feature_space": f"evaluation-model ({evaluator.arch}) penultimate features"}


@claim_scope()
def evaluate_attack(attack_run: str | Path, eval_model: str | Path, out_dir: str | Path | None = None,
                    device: str = "cpu", robust_model: str | Path | None = None, pixel_k: int = PIXEL_K,
                    reject_quantile: float | None = REJECT_QUANTILE, chance: bool = True,
                    gallery: bool = True) -> dict[str, Any]:
    """Privacy metrics of one attack run under every judge; with ``out_dir``, writes
    ``metrics.json``, ``judgements.csv`` and ``gallery.png`` there.

    Example:
        >>> m = evaluate_attack("runs/gmi-0", "runs/eval", robust_model="runs/eval-robust")  # doctest: +SKIP
        >>> m["attack_accuracy_top1"], m["attack_accuracy_robust"], m["attack_accuracy_pixel"]  # doctest: +SKIP
    """
    if out_dir is not None:
        lock_run_dir(out_dir)  # one writer of out_dir at a time
    t0 = time.perf_counter()
    retain_freed_memory()
    res = load_attack_run(attack_run)
    info = res.info
    target_rec = target_record(Path(info["target"]))
    evaluator = load_judge(eval_model, target_rec, device)
    robust = load_judge(robust_model, target_rec, device) if robust_model is not None else None
    target = load_classifier(info["target"], device)
    if lever("channels_last_inference"):
        import dataclasses

        evaluator = dataclasses.replace(evaluator, model=inference_copy(evaluator.model))
        robust = robust if robust is None else dataclasses.replace(robust, model=inference_copy(robust.model))
        target = inference_copy(target)
    splits = target_splits(target_rec)
    # what every evaluation of a target with these judges shares (the reuse_evaluation lever)
    judges_key = (file_key(eval_model), file_key(robust_model), pixel_k, reject_quantile, str(device),
                  lever("channels_last_inference"), lever("fold_batchnorm"))
    memory = reused(("memory", data_key(target_rec), reject_quantile),
                    lambda: training_images(splits, reject_quantile))
    failed = attack_failures(info, len(res.labels))
    df = count_failures_as_misses(judge_images(res.images, res.labels, evaluator, robust, memory, target=target,
                                               pixel_k=pixel_k), failed)
    keep = torch.isin(memory.private_labels, torch.as_tensor(list(info["classes"])))
    metrics: dict[str, Any] = {
        **judge_summary(df),
        **distribution_metrics(evaluator, res.images, res.labels, memory.private[keep], memory.private_labels[keep],
                               failed=failed),
        "attack_no_initial_point": int(attack_failures(info, len(res.labels), "no_initial_point").sum()),
        "attack_notes": attack_notes(info),
        **judge_record("eval", evaluator), **judge_record("robust", robust),
        "target_arch": target_rec["config"].get("arch"), "pixel_k": pixel_k, "pixel_reject_quantile": reject_quantile,
        "pixel_reject_sq_distance": memory.reject_sq_distance,
        "n_reconstructions": int(len(res.labels)), "attack": info["attack"], "classes": info["classes"],
        "seed": info.get("seed"), "target_defense": info.get("target_defense"), "attack_run": str(attack_run),
    }
    metrics.update(reused(("ceilings", data_key(target_rec), judges_key),
                          lambda: judge_ceilings(evaluator, robust, memory, splits, pixel_k=pixel_k)))
    chance_df = pd.DataFrame()
    if chance:
        key = ("chance", data_key(target_rec), judges_key, file_key(info.get("prior")), file_key(info["target"]),
               tuple(int(c) for c in info["classes"]), max(CHANCE_PER_CLASS, int(info["per_class"])),
               int(info.get("seed", 0)), CHANCE_MAX_SAMPLES)
        rates, chance_df = reused(key, lambda: chance_baseline(info, target, evaluator, robust, memory, device,
                                                                 seed=int(info.get("seed", 0)), pixel_k=pixel_k))
        rates, chance_df = dict(rates), chance_df.copy()
        metrics.update(rates)
    metrics["evaluate_seconds"] = round(time.perf_counter() - t0, 3)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "judgements.csv", df.assign(seed=info.get("seed")).rename_axis("index").to_csv())
        if chance:
            atomic_write_text(out / "chance_judgements.csv",
                              chance_df.assign(seed=info.get("seed")).rename_axis("index").to_csv())
        if gallery:
            leakage_gallery(res.images, res.labels, evaluator, memory, df, out / "gallery.png",
                            title=f"{info['attack']} vs {info.get('target_defense')}")
        existing = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else {}
        atomic_write_json(out / "metrics.json", {**existing, **metrics})
    return metrics


def nearest_private(queries: np.ndarray, labels: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray) -> np.ndarray:
    """Row in ``bank`` of each query's nearest same-class entry (squared L2, faiss)."""
    from .metrics import PrivateIndex

    return PrivateIndex(bank, bank_labels, use_gpu=False).search(queries, labels, k=1)[1][:, 0]


def leakage_gallery(images: torch.Tensor, labels: torch.Tensor, evaluator: Judge, memory: TrainingImages,
                    verdicts: pd.DataFrame, path: str | Path, per_class: int = 2, max_classes: int = 8,
                    title: str = "", class_names=None) -> Path:
    """What actually leaked: each reconstruction beside its nearest same-class private image
    in pixels and in evaluation features, and its nearest training image of any class
    (marked when it is public). Shows ``per_class`` reconstructions of ``max_classes`` classes."""
    from .metrics.judges import pixel_vectors
    from .plots import nearest_images_figure, save_figure

    y = labels.long().numpy()
    rows = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)[:max_classes]])
    keep = np.isin(memory.private_labels.numpy(), np.unique(y[rows]))
    bank, bank_y = memory.private[keep], memory.private_labels[keep].numpy()
    px = nearest_private(pixel_vectors(images[rows]), y[rows], pixel_vectors(bank), bank_y)
    f_bank = extract_features(evaluator.model, bank).numpy()
    fx = nearest_private(extract_features(evaluator.model, images[rows].float()).numpy(), y[rows], f_bank, bank_y)
    all_train = torch.cat([memory.private, memory.public])
    nearest_any = verdicts["pixel_nearest_index"].to_numpy()[rows]
    fig = nearest_images_figure(
        images[rows].float(), normalize(bank[px]), normalize(bank[fx]), normalize(all_train[nearest_any]),
        labels=y[rows], nearest_public=verdicts["pixel_nearest_public"].to_numpy()[rows],
        verdicts=verdicts.iloc[rows], title=title, class_names=class_names)
    return save_figure(fig, path)


def load_judgements(attack_run: str | Path) -> pd.DataFrame:
    """``judgements.csv`` of an evaluated attack run (one row per reconstruction)."""
    path = Path(attack_run) / "judgements.csv"
    if not path.is_file():
        raise ReAnalysisError(f"no judgements.csv in {attack_run}; run `re-analysis evaluate` on it first")
    return pd.read_csv(path)
