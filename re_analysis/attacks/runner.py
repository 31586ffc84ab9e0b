"""Run an attack end to end against a trained target: the function behind ``re-analysis attack``.

``run_attack`` loads the target run, trains or reuses the attack's prior (cached by
content), attacks the classes in chunks (default: all classes in one batch), saves each
finished chunk (resume skips it) and a checkpoint of the running chunk's optimisation
state, then merges the chunks into ``reconstructions.safetensors`` (images in [-1, 1],
labels, latents), ``grid.png`` and ``attack.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.utils import save_image

from ..artifacts import (atomic_output, atomic_save_tensors, atomic_write_json, claim_run_dir, claim_scope,
                         environment_versions, load_tensors, read_json, remove_artifact)
from ..data import materialize
from ..errors import ReAnalysisError
from ..distributed import barrier, rank_device, setup
from ..runs import target_record, target_splits
from ..models.inputs import predict_logits, resolve_device
from ..training import load_classifier
from .base import AttackResult, LabelOnlyTarget, attack_class, create_attack
from .priors import PriorConfig, load_prior, train_prior

RECON = "reconstructions.safetensors"


def default_cache() -> Path:
    return Path(os.environ.get("RE_ANALYSIS_CACHE", "runs"))


@dataclass(frozen=True)
class AttackConfig:
    """What determines an attack run. ``iterations=None`` keeps the attack's own default (its
    paper's budget); ``prior_steps=None`` trains a missing prior for its paper's budget;
    ``prior_params`` are further :class:`PriorConfig` fields (e.g. ``minibatch_features=0``)."""

    attack: str = "gmi"
    target: str = ""
    prior: str | None = None
    classes: tuple | None = None
    per_class: int = 5
    iterations: int | None = None
    seed: int = 0
    params: dict = field(default_factory=dict)
    prior_steps: int | None = None
    prior_seed: int = 0
    prior_params: dict = field(default_factory=dict)
    classes_per_chunk: int = 0
    device: str = "auto"

    def __post_init__(self):
        attack_class(self.attack)  # unknown name -> clear error
        if not self.target:
            raise ReAnalysisError("an attack needs --target, the run directory of a trained target model")
        if self.per_class < 1:
            raise ReAnalysisError(f"per_class must be at least 1, got {self.per_class}")
        if self.iterations is not None and self.iterations < 1:
            raise ReAnalysisError(f"iterations must be at least 1, got {self.iterations}")
        if self.prior_steps is not None and self.prior_steps < 1:
            raise ReAnalysisError(f"prior_steps must be at least 1 (or None for the paper's budget), got {self.prior_steps}")
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "prior_params", dict(self.prior_params))
        fixed = {"kind", "dataset", "root", "image_size", "dataset_params", "seed", "steps", "target_hash"}
        known = set(PriorConfig.__dataclass_fields__) - fixed - {"checkpoint_every"}
        unknown = set(self.prior_params) - known
        if unknown:
            raise ReAnalysisError(f"unknown prior parameter(s) {', '.join(sorted(unknown))}; "
                                  f"known: {', '.join(sorted(known))}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))


def prior_config(cfg: AttackConfig, kind: str, data: dict, target_hash: str | None = None) -> PriorConfig:
    """The ``kind`` prior that ``cfg`` asks for on ``data`` (a mapping with the dataset's
    ``dataset``, ``root``, ``image_size``, ``dataset_params``: a target's config or a preset)."""
    return PriorConfig(kind=kind, dataset=data["dataset"], root=data.get("root"), image_size=data.get("image_size"),
                       dataset_params=data.get("dataset_params", {}), seed=cfg.prior_seed, steps=cfg.prior_steps,
                       **cfg.prior_params, target_hash=target_hash)


def resolve_prior(cfg: AttackConfig, attack_cls, target_rec: dict, target_model, device, cache_root: Path,
                  progress: bool):
    if cfg.prior is not None:
        prior = load_prior(cfg.prior, device)
        if prior.kind != attack_cls.prior_kind:
            raise ReAnalysisError(f"attack {cfg.attack!r} needs a {attack_cls.prior_kind} prior but {cfg.prior} "
                                  f"holds a {prior.kind} one; drop --prior to train the right one")
        return prior
    pc = prior_config(cfg, attack_cls.prior_kind, target_rec["config"],
                      target_hash=None if attack_cls.prior_kind == "wgan-gp" else target_rec["config_hash"])
    return train_prior(pc, target=target_model, cache_root=cache_root / "priors", device=str(device),
                       progress=progress)


@claim_scope()  # the attack's run directory stays locked until it is finished
def run_attack(cfg: AttackConfig, out_dir: str | Path, cache_root: str | Path | None = None,
               progress: bool = True) -> AttackResult:
    """Attack ``cfg.target`` and write the run to ``out_dir``; a finished run is reused.

    Under ``torchrun`` every rank attacks its share of the class chunks (by default one
    chunk per rank), rank 0 merges them into one run, and every rank returns the result.
    """
    out_dir = Path(out_dir)
    cache_root = Path(cache_root) if cache_root else default_cache()
    device = resolve_device(cfg.device)
    dist_ = setup(device, backend="gloo")  # barriers only: the ranks never exchange tensors
    device = rank_device(device)
    attack_cls = attack_class(cfg.attack)
    params = dict(cfg.params)
    if cfg.iterations is not None and "iterations" in attack_cls.defaults:
        params["iterations"] = cfg.iterations
    attack = create_attack(cfg.attack, **params)
    rec = target_record(Path(cfg.target))
    target = load_classifier(cfg.target, device)
    classes = list(cfg.classes) if cfg.classes is not None else list(range(target.num_classes))
    bad = [c for c in classes if not 0 <= c < target.num_classes]
    if bad:
        raise ReAnalysisError(f"classes {bad} do not exist: the target has classes 0-{target.num_classes - 1}")
    size = cfg.classes_per_chunk or -(-len(classes) // dist_.world)
    key = {"attack": cfg.attack, "params": attack.params, "target": rec["config_hash"], "classes": classes,
           "per_class": cfg.per_class, "seed": cfg.seed, "prior": cfg.prior or {"steps": cfg.prior_steps, "seed": cfg.prior_seed,
                                                                   **({"params": cfg.prior_params} if cfg.prior_params else {})},
           "classes_per_chunk": 0 if size >= len(classes) else size}
    if dist_.is_main:
        claim_run_dir(out_dir, key, kind="attack")
    barrier()
    if (out_dir / "attack.json").is_file() and (out_dir / RECON).is_file():
        return load_attack_run(out_dir)

    t0 = time.perf_counter()
    if dist_.is_main:  # one rank trains (or loads) the prior; the others then load it from the cache
        prior = resolve_prior(cfg, attack_cls, rec, target, device, cache_root, progress)
    barrier()
    if not dist_.is_main:
        prior = resolve_prior(cfg, attack_cls, rec, target, device, cache_root, False)
    splits = target_splits(rec)
    public, _ = materialize(splits.public)
    attack.prepare(target, prior, public, device, cfg.seed, cache_root / "augmented" / rec["config_hash"])
    victim = LabelOnlyTarget(target) if attack_cls.access == "label" else target

    chunks = [classes[i:i + size] for i in range(0, len(classes), size)]
    parts = out_dir / "parts"
    parts.mkdir(exist_ok=True)
    for ci, chunk in enumerate(chunks):
        if ci % dist_.world != dist_.rank:
            continue
        part = parts / f"chunk-{ci:04d}.safetensors"
        if part.is_file():
            continue  # finished before a kill: not redone
        labels = torch.tensor(chunk, device=device).repeat_interleave(cfg.per_class)
        res = attack.run(victim, prior, labels, cfg.seed, state_path=parts / f"state-{ci:04d}.safetensors",
                         progress=progress)
        atomic_save_tensors(part, {"images": res.images, "labels": res.labels, "latents": res.latents.flatten(1),
                                   "loss_history": torch.tensor(res.loss_history or [float("nan")])},
                            {"info": json.dumps(run_summary(res.info))})
        remove_artifact(parts / f"state-{ci:04d}.safetensors")
    barrier()
    if dist_.is_main:
        merge_attack_run(out_dir, cfg, attack, rec, target, prior, classes, len(chunks), time.perf_counter() - t0,
                         getattr(victim, "queries", None))
    barrier()
    return load_attack_run(out_dir)


def run_summary(info: dict) -> dict:
    """The JSON-able part of an attack's run info (tensors such as traces stay in memory)."""
    return {k: v for k, v in info.items() if not torch.is_tensor(v)}


def chunk_info(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get("info", "{}"))


def prior_budget(prior) -> dict:
    """The prior's steps as trained against its paper's (from ``prior.json``)."""
    info = prior.info
    return {"prior_steps": info.get("steps"), "prior_paper_steps": info.get("paper_steps"),
            "prior_steps_fraction": info.get("steps_fraction")}


def merge_attack_run(out_dir: Path, cfg: AttackConfig, attack, rec, target, prior, classes, n_chunks: int,
                     seconds: float, queries=None) -> AttackResult:
    paths = [out_dir / "parts" / f"chunk-{ci:04d}.safetensors" for ci in range(n_chunks)]
    parts = [load_tensors(p) for p in paths]
    images = torch.cat([p["images"] for p in parts])
    labels = torch.cat([p["labels"] for p in parts]).long()
    latents = torch.cat([p["latents"] for p in parts])
    history = [p["loss_history"].tolist() for p in parts]
    with torch.no_grad():
        pred = predict_logits(target, images.to(next(target.parameters()).device)).argmax(1)
    target_acc = float((pred == labels).float().mean())
    atomic_save_tensors(out_dir / RECON, {"images": images, "labels": labels, "latents": latents})
    save_grid(out_dir / "grid.png", images, labels)
    info = {"attack": cfg.attack, "params": attack.params, "classes": classes, "per_class": cfg.per_class,
            "seed": cfg.seed, "target": str(cfg.target), "target_config_hash": rec["config_hash"],
            "target_defense": rec["config"].get("defense"), "dataset": rec["config"].get("dataset"),
            "prior": str(prior.run_dir) if prior.run_dir else None, "prior_kind": prior.kind,
            "target_accuracy_on_reconstructions": target_acc, "loss_history": history,
            "label_queries": queries, "seconds": round(seconds, 3), "versions": environment_versions(),
            **attack.budget(), **prior_budget(prior), "hflip_preserves_labels": prior.hflip,
            "run_info": [chunk_info(p) for p in paths]}
    atomic_write_json(out_dir / "attack.json", info)
    return AttackResult(images, labels, latents, history[0] if len(history) == 1 else sum(history, []), info)


def save_grid(path: str | Path, images: torch.Tensor, labels: torch.Tensor) -> Path:
    """A run's reconstructions as one image, by class: a row per class with its reconstructions,
    or, with one per class (one restart, or GMI's best of several), the classes in rows of
    ``ceil(sqrt(classes))`` (not one column of a hundred tiles). Images in [-1, 1].

    Example:
        >>> save_grid("runs/a/grid.png", result.images, result.labels)  # doctest: +SKIP
    """
    import math

    order = torch.argsort(labels, stable=True)
    per_class = int(torch.bincount(labels.long()).max()) if len(labels) else 1
    nrow = per_class if per_class > 1 else max(1, math.ceil(math.sqrt(len(images))))
    with atomic_output(path) as tmp:
        save_image(images[order] * 0.5 + 0.5, tmp, nrow=nrow, padding=1)
    return Path(path)


def load_attack_run(run_dir: str | Path) -> AttackResult:
    """Reconstructions and record of a finished attack run."""
    run_dir = Path(run_dir)
    if not (run_dir / RECON).is_file() or not (run_dir / "attack.json").is_file():
        raise ReAnalysisError(f"{run_dir} holds no finished attack (reconstructions.safetensors, attack.json); "
                              "run `re-analysis attack --out DIR` first")
    t = load_tensors(run_dir / RECON)
    info = read_json(run_dir / "attack.json")
    return AttackResult(t["images"], t["labels"].long(), t["latents"], [], info)
