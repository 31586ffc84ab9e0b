"""One training loop for every defense and both roles (target and evaluation model).

Every target and the evaluation model train on their dataset's standard augmentation
(:mod:`re_analysis.augment`: per-image crops/shifts, jitter, flips where labels allow), then
``Normalize(0.5, 0.5)``, then the defense's own batch transform (Random Erasing last, as in
MIDRE). The recipe is part of the run's config key and recorded in ``metrics.json``.

Seeded and deterministic on CPU: every epoch re-seeds its data order, its augmentation,
its Random Erasing boxes and its dropout from ``(seed, epoch)``, so a run resumed from the
checkpoint of epoch k continues exactly as an uninterrupted run would. A checkpoint
(safetensors, with the optimiser state and any state the defense trains itself; no pickle)
is written atomically after each epoch. A network that dies (every penultimate ReLU feature
zero on the training images after an epoch: a constant classifier) restarts from another
initialisation with the same data order and recipe, at most three times, and its
``metrics.json`` records the restarts; a run that never dies is untouched, bit for bit. Models and batches are channels_last on every device
(faster convolutions on CPU too); on CUDA the loop adds bf16 autocast.

Example:
    >>> from re_analysis.config import TrainConfig
    >>> from re_analysis.training import train
    >>> result = train(TrainConfig(dataset="mnist5k", defense="random-erasing"), "runs/re-0")  # doctest: +SKIP
    >>> result.metrics["natural_accuracy"]  # doctest: +SKIP
    0.98
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .artifacts import (artifact_exists, atomic_save_tensors, atomic_write_json, claim_run_dir, claim_scope,
                        config_hash, environment_versions, load_state, load_tensors, read_json, remove_artifact,
                        save_state, tensors_metadata)
from .augment import StandardAugmentation, standard_augmentation
from .config import TrainConfig
from .data import load_dataset, manifest_hash, materialize
from .defenses import Defense, create_defense
from .distributed import all_sum, barrier, rank_device, setup
from .adversarial import pgd_accuracy, pgd_examples
from .errors import ReAnalysisError
from .models import Classifier, create_model
from .models.inputs import as_model_input, autocast, channels_last, normalize, predict_logits, resolve_device
from .optim import lr_at, make_optimizer
from .runs import WEIGHTS

__all__ = ["train", "TrainResult", "load_classifier", "natural_accuracy", "resolve_device",
           "normalize", "predict_logits"]

CHECKPOINT = "checkpoint.safetensors"
DEFENSE_ARTIFACTS = "defense.safetensors"
LOOP_STATS = ("epoch", "loss", "train_accuracy", "lr")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: Classifier


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The augmentation seed of one batch: a function of (seed, epoch, batch, rank) only."""
    return (epoch_seed(seed, epoch) * 7_919 + rank) * 100_003 + batch


def training_inputs(images: torch.Tensor, augmentation: StandardAugmentation | None, seed: int) -> torch.Tensor:
    """uint8 pixels -> standard augmentation (on [0, 1] pixels) -> ``Normalize(0.5, 0.5)``."""
    pixels = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    if augmentation is not None:
        pixels = augmentation(pixels, seed)
    return normalize(pixels)


def single_process_only(defense) -> bool:
    """Whether ``defense`` (or a member) needs the whole batch in one process: per-sample
    clipping, a loss over the whole batch, or state it trains itself."""
    return any(getattr(m, attr, False) for m in getattr(defense, "members", [defense])
               for attr in ("per_sample_privacy", "loss_mixes_samples", "single_process"))


def natural_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     batch_size: int = 512) -> float:
    """Top-1 accuracy on uint8 images (the private test split)."""
    logits = predict_logits(model, images, batch_size)
    return float((logits.argmax(1) == labels.cpu()).float().mean())


def save_weights(run_dir: Path, model: Classifier, extra: dict[str, Any]) -> Path:
    info = {"arch": model.arch, "num_classes": model.num_classes, "in_channels": model.in_channels,
            "image_size": model.image_size, "feature_dim": model.feature_dim, **extra}
    return atomic_save_tensors(run_dir / WEIGHTS, model.state_dict(), {"model": json.dumps(info)})


def load_classifier(run_dir: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild a trained classifier from its run directory (safetensors only, no pickle).

    Example:
        >>> model = load_classifier("runs/re-0")  # doctest: +SKIP
        >>> model.features(x)  # doctest: +SKIP
    """
    path = Path(run_dir) / WEIGHTS
    if not artifact_exists(path):
        raise ReAnalysisError(f"no trained model in {run_dir} (missing {WEIGHTS}); run `re-analysis train --out {run_dir}` first")
    info = json.loads(tensors_metadata(path)["model"])
    if info["arch"] == "external":  # an audited model of a user's: its own architecture, its recorded weights
        from .models.external import rebuild_external

        model = rebuild_external(info["external"], run_dir)
        model.load_state_dict(load_tensors(path))
        model.train_info = info
        return model.to(device).eval()
    model = create_model(info["arch"], info["num_classes"], info["in_channels"], info["image_size"])
    if info.get("wrapper"):  # defenses that change the architecture (MID's bottleneck, DP-SGD's GroupNorm)
        w = info["wrapper"]
        model = create_defense(w["defense"], **w.get("params", {})).wrap_model(model)
    model.load_state_dict(load_tensors(path))
    model.train_info = info
    return model.to(device).eval()


def data_key(splits) -> dict:
    """``{"data": hash}`` for a dataset built from files with a manifest (``glyphs``: font files
    and renderer versions), so that a run on other data is refused instead of reused."""
    h = manifest_hash(splits)
    return {"data": h} if h else {}


@claim_scope()  # the run directory stays locked until train returns
def train(config: TrainConfig, out_dir: str | Path | None = None, cache_root: str | Path = "runs",
          progress: bool = True) -> TrainResult:
    """Train (or reuse) the classifier that ``config`` describes.

    The run directory defaults to ``cache_root/train-<config hash>``. A finished run with
    the same config is returned as is; an unfinished one resumes from its last checkpoint;
    a directory holding a different config is refused.
    """
    config = config.resolved()
    device = resolve_device(config.device)
    defense = create_defense(config.defense, **config.defense_params)
    splits = load_dataset(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size,
                          **config.dataset_params)
    defense.check(splits)
    augmentation = standard_augmentation(config.dataset, splits, enabled=defense.standard_augmentation)
    key = {**config.to_dict(), "augmentation": augmentation.recipe, **data_key(splits)}
    num_classes = splits.num_classes + (splits.num_public_classes if config.open_set else 0)
    model = reinitialised(config, num_classes, splits, attempt=0)
    start = None
    if config.init_from is not None:
        start = start_weights(config.init_from, model, defense)
        key["init_from"] = start["config_hash"]  # what it started from, not where that lies on this machine
    run_dir = Path(out_dir) if out_dir is not None else Path(cache_root) / f"train-{config_hash(key)}"
    dist_ = setup(device)
    device = rank_device(device)
    if dist_.enabled and single_process_only(defense):
        raise ReAnalysisError(f"defense {config.defense!r} is not supported under torchrun yet (per-sample "
                              "clipping, HSIC and trapdoor triggers need the whole batch in one process); "
                              "run it without torchrun")
    if dist_.is_main:
        claim_run_dir(run_dir, key, kind="train")  # only once every input is known to be valid
    barrier()
    if (run_dir / "metrics.json").is_file() and (run_dir / WEIGHTS).is_file():
        return TrainResult(run_dir, read_json(run_dir / "metrics.json"), load_classifier(run_dir, device))

    x_train, y_train = training_data(config, splits)
    x_test, y_test = materialize(splits.private_test)
    x_train, y_train = x_train.to(device), y_train.to(device)
    ckpt = run_dir / CHECKPOINT

    def build(model, defense):
        """(model, the module trained, optimiser) for a fresh start or a resume."""
        model = defense.wrap_model(model.to(device)).to(device)  # the classifier that is trained and saved
        model = channels_last(model)
        optimizer = make_optimizer(config, model.parameters())
        trained, optimizer = defense.configure(model, optimizer, {
            "num_samples": len(y_train), "batch_size": config.batch_size, "epochs": config.epochs, "config": config,
            "splits": splits, "device": device, "resuming": ckpt.is_file(),
            "inputs": lambda images, seed: training_inputs(images, augmentation, seed)})
        if dist_.enabled:
            trained = torch.nn.parallel.DistributedDataParallel(
                trained, device_ids=[device.index] if device.type == "cuda" else None)
        return model, trained, optimizer

    model, trained, optimizer = build(model, defense)
    start_epoch, history, restarts = 0, [], []  # restarts: the dead starts before this one
    if ckpt.is_file():
        meta = load_checkpoint(ckpt, trained, optimizer, defense)
        # a restarted run's checkpoint lists its dead starts: the weights loaded are the latest start's
        start_epoch, history, restarts = int(meta["epoch"]), list(meta["history"]), list(meta.get("restarts", []))
    # a dead network can be restarted only where its start is ours and one process trains it
    may_restart = config.init_from is None and not dist_.enabled

    t0 = time.perf_counter()
    bar = tqdm(total=config.epochs, initial=start_epoch, desc=f"train {config.arch}/{config.defense}",
               disable=not progress or not dist_.is_main, leave=False)
    epoch = start_epoch
    while epoch < config.epochs:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, epoch)
        stats = train_one_epoch(trained, defense, optimizer, x_train, y_train, config, epoch, device,
                                rank=dist_.rank, world=dist_.world, augmentation=augmentation)
        if may_restart and len(restarts) < MAX_RESTARTS and dead_features(model, x_train):
            restarts.append({"attempt": len(restarts), "epoch": epoch + 1, "loss": stats["loss"]})
            remove_artifact(ckpt)  # the dead start's: the new one is no resume (TL-DMI pretrains again)
            defense = create_defense(config.defense, **config.defense_params)
            model, trained, optimizer = build(reinitialised(config, num_classes, splits, len(restarts)), defense)
            epoch, history = 0, []
            bar.reset()
            continue
        history.append({"epoch": epoch + 1, **stats})
        bar.update()
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_accuracy']:.3f}")
        if dist_.is_main:
            save_checkpoint(ckpt, trained, optimizer, defense,
                            {"epoch": epoch + 1, "history": history, **({"restarts": restarts} if restarts else {})})
        barrier()
        epoch += 1
    bar.close()

    acc = natural_accuracy(model, x_test, y_test)
    last_stats = {k: v for k, v in (history[-1] if history else {}).items() if k not in LOOP_STATS}
    metrics = {
        "natural_accuracy": acc,
        "train_accuracy": history[-1]["train_accuracy"] if history else None,
        "dataset": config.dataset, "arch": config.arch, "role": config.role,
        "defense": config.defense, "defense_params": defense.params, "seed": config.seed,
        "epochs": config.epochs, "num_classes": splits.num_classes,
        "train_size": len(y_train), "test_size": len(y_test),
        "history": history, "train_seconds_this_call": round(time.perf_counter() - t0, 3),
        "device": str(device), "world_size": dist_.world, "config_hash": config_hash(key),
        "versions": environment_versions(),
        "augmentation": {**augmentation.recipe, "library": augmentation_library(augmentation)},
        **({"init_from": start} if start else {}),
        **({"restarts": {"attempt": len(restarts), "dead_starts": restarts, "why": RESTART_WHY}} if restarts else {}),
        **last_stats, **defense.report(model, x_test, y_test), **judge_report(model, config, splits, x_test, y_test),
    }
    if dist_.is_main:
        save_weights(run_dir, model, {"dataset": config.dataset, "defense": config.defense, "role": config.role,
                                      "wrapper": defense.wrapper_info(), "num_private_classes": splits.num_classes,
                                      "open_set": bool(config.open_set)})
        extra = defense.artifacts()
        if extra:
            atomic_save_tensors(run_dir / DEFENSE_ARTIFACTS, extra)
        atomic_write_json(run_dir / "metrics.json", metrics)
        remove_artifact(ckpt)
    barrier()
    return TrainResult(run_dir, metrics, model.eval())


# A network whose penultimate ReLU features are zero on every training image computes a
# constant: no gradient reaches below its last layer again, so it cannot learn (the dying-ReLU
# failure; seen on glyphs with re-partial-boxes at seed 0, whose first epoch left all 128 units
# of cnn28s's neck dead, natural accuracy 0.01). Such a run restarts from another
# initialisation, same data order and recipe; a run that never dies is not touched.
MAX_RESTARTS = 3
RESTART_WHY = ("every penultimate feature was zero on the training images after an epoch (a constant classifier, "
               "which no gradient can revive): training restarted from another initialisation, same data and recipe")


def init_seed(seed: int, attempt: int) -> int:
    """The initialisation seed of a run's ``attempt``-th restart (0: the run's own seed)."""
    return seed if attempt == 0 else seed * 1_000_003 + 500_000 + attempt


def reinitialised(config: TrainConfig, num_classes: int, splits, attempt: int) -> Classifier:
    """A fresh model of the run's architecture, initialised from :func:`init_seed`."""
    torch.manual_seed(init_seed(config.seed, attempt))
    return create_model(config.arch, num_classes, splits.channels, splits.image_size)


@torch.no_grad()
def dead_features(model: nn.Module, x_train: torch.Tensor, n: int = 512) -> bool:
    """Whether ``model``'s penultimate features are zero on every one of ``n`` training images
    (spread over the split). False for a model without ``features`` or whose features are not
    ReLU outputs (never exactly zero everywhere)."""
    features = getattr(model, "features", None)
    if features is None:
        return False
    idx = torch.linspace(0, len(x_train) - 1, min(n, len(x_train))).long()
    was = model.training
    model.eval()
    try:
        f = features(channels_last(as_model_input(x_train[idx])))
    finally:
        model.train(was)
    return bool((f == 0).all())


def start_weights(init_from: str | Path, model: Classifier, defense: Defense) -> dict[str, Any]:
    """Load the weights of the finished run ``init_from`` into ``model`` (fine-tuning); returns
    what the run records about its start: the start's config hash, accuracy and role.

    The start must be the same architecture with the same outputs (a run of the same
    dataset and role) and unwrapped (a defense that changes the architecture cannot start
    from another run)."""
    path = Path(init_from)
    if not (path / "metrics.json").is_file() or not artifact_exists(path / WEIGHTS):
        raise ReAnalysisError(f"init_from {path} is not a finished training run (no metrics.json and {WEIGHTS}); "
                              "train it first or drop init_from")
    if defense.wrapper_info():
        raise ReAnalysisError(f"defense {defense.name!r} changes the architecture; it cannot start from another run "
                              "(drop init_from)")
    info = json.loads(tensors_metadata(path / WEIGHTS)["model"])
    want = {"arch": model.arch, "num_classes": model.num_classes, "in_channels": model.in_channels,
            "image_size": model.image_size}
    have = {k: info.get(k) for k in want}
    if have != want or info.get("wrapper"):
        raise ReAnalysisError(f"init_from {path} holds {have}{' (wrapped by a defense)' if info.get('wrapper') else ''}, "
                              f"but this run trains {want}; start from a run of the same architecture, dataset and role")
    model.load_state_dict(load_tensors(path / WEIGHTS))
    metrics = read_json(path / "metrics.json")
    return {"config_hash": metrics["config_hash"], "natural_accuracy": metrics["natural_accuracy"],
            "role": metrics["role"], "epochs": metrics["epochs"]}


def training_data(config: TrainConfig, splits) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and labels. An open-set evaluation model
    learns the private classes AND the public ones (labels offset by the private count), so
    that a reconstruction showing a public identity can be judged a miss."""
    x, y = materialize(splits.private_train)
    if not config.open_set:
        return x, y
    x_pub, y_pub = materialize(splits.public)
    return torch.cat([x, x_pub]), torch.cat([y, y_pub + splits.num_classes])


def judge_report(model: Classifier, config: TrainConfig, splits, x_test, y_test) -> dict[str, Any]:
    """An evaluation model's closed-set accuracy (argmax over the private classes) and, for
    the robust judge, its accuracy under PGD-10 at the training budget."""
    if config.role != "eval":
        return {}
    out = {"open_set": bool(config.open_set), "num_private_classes": splits.num_classes}
    logits = predict_logits(model, x_test)
    out["natural_accuracy_closed"] = float((logits[:, :splits.num_classes].argmax(1) == y_test.cpu()).float().mean())
    if config.adversarial:
        out["adversarial"] = dict(config.adversarial)
        out["pgd_accuracy"] = pgd_accuracy(model, x_test, y_test, config.adversarial["eps"], steps=10,
                                           seed=config.seed)
        out["pgd_attack"] = {"eps": config.adversarial["eps"], "steps": 10, "units": "pixels in [0, 1]"}
    return out


def unwrap_ddp(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def augmentation_library(augmentation: StandardAugmentation) -> str | None:
    if augmentation.pipeline is None:
        return None
    import kornia

    return f"kornia {kornia.__version__}"


def defense_state(defense) -> tuple[dict, dict, dict]:
    """The defense's own trained state as (modules, optimizers, plain tensors), named for the checkpoint."""
    mods, opts = defense.state()
    modules = {f"defense/{k}": v for k, v in mods.items() if not torch.is_tensor(v)}
    tensors = {f"defense/{k}": v for k, v in mods.items() if torch.is_tensor(v)}
    return modules, {f"defense/{k}": v for k, v in opts.items()}, tensors


def save_checkpoint(path: Path, trained: nn.Module, optimizer, defense, meta: dict) -> None:
    modules, optimizers, tensors = defense_state(defense)
    save_state(path, {"model": unwrap_ddp(trained), **modules, **tensors}, {"optimizer": optimizer, **optimizers},
               meta)


def load_checkpoint(path: Path, trained: nn.Module, optimizer, defense) -> dict:
    """Restore model, optimiser and the defense's state in place; returns the checkpoint's meta."""
    modules, optimizers, tensors = defense_state(defense)
    restored = load_state(path, {"model": unwrap_ddp(trained), **modules}, {"optimizer": optimizer, **optimizers})
    for name, t in tensors.items():
        t.copy_(restored["tensors"][name])
    return restored["meta"]


def train_one_epoch(model: nn.Module, defense, optimizer, x_train: torch.Tensor, y_train: torch.Tensor,
                    config: TrainConfig, epoch: int, device: torch.device, rank: int = 0,
                    world: int = 1, augmentation: StandardAugmentation | None = None) -> dict[str, float]:
    """One pass over the private training split; randomness seeded from (seed, epoch).

    Batches come from ``defense.batches`` (a seeded shuffle; Poisson sampling for DP-SGD),
    go through the standard ``augmentation`` (seeded per batch), ``Normalize`` and the
    defense's batch transform. Under DDP (``world > 1``) every rank draws the same global
    batches, takes every ``world``-th slot of each (a global batch of ``batch_size`` split
    across ranks), and draws its own augmentation, Random Erasing boxes and dropout from
    ``(seed, epoch, rank)``. The defense's ``epoch_stats`` join the returned numbers.
    """
    s = epoch_seed(config.seed, epoch)
    torch.manual_seed(s + 7919 * rank)
    order_gen = torch.Generator().manual_seed(s)
    aug_gen = torch.Generator(device=device).manual_seed(s + 1 + 7919 * rank)
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    # a duck-typed defense (a test spy, a user's object) may implement only transform_batch and loss
    batches = getattr(defense, "batches", None) or (lambda n, bs, g: Defense.batches(defense, n, bs, g))
    for b, batch in enumerate(batches(len(y_train), config.batch_size, order_gen)):
        if world > 1 and len(batch) < world:
            continue  # a global batch too small to give every rank a sample is dropped on all ranks
        idx = batch[rank::world].to(device)
        x = training_inputs(x_train[idx], augmentation, batch_seed(config.seed, epoch, b, rank))
        y = y_train[idx]
        x = defense.transform_batch(x, y, generator=aug_gen)
        if config.adversarial:  # the robust judge: train on PGD examples (Madry et al. 2018)
            x = pgd_examples(unwrap_ddp(model), x, y, generator=aug_gen, **config.adversarial)
        x = channels_last(x)
        with autocast(device):
            loss, logits = defense.loss(model, x, y, epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    total_loss, correct, seen = all_sum([total_loss, correct, seen], device)
    if seen == 0 or not torch.isfinite(torch.tensor(total_loss)):
        raise ReAnalysisError(f"training diverged at epoch {epoch + 1} (loss {total_loss}); lower --lr")
    return {"loss": total_loss / seen, "train_accuracy": correct / seen, "lr": optimizer.param_groups[0]["lr"],
            **(defense.epoch_stats() if hasattr(defense, "epoch_stats") else {})}
