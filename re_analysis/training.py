"""One training loop for every defense and both roles (target and evaluation model).

Seeded and deterministic on CPU: every epoch re-seeds its data order, its Random Erasing
boxes and its dropout from ``(seed, epoch)``, so a run resumed from the checkpoint of
epoch k continues exactly as an uninterrupted run would. A checkpoint (safetensors, with
the optimiser state; no pickle) is written atomically after each epoch. On CUDA the loop
uses bf16 autocast and channels_last.

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

from .artifacts import (atomic_save_tensors, atomic_write_json, claim_run_dir, config_hash,
                        environment_versions, load_state, load_tensors, read_json, save_state)
from .config import TrainConfig
from .data import load_dataset, materialize
from .defenses import create_defense
from .distributed import all_sum, barrier, rank_device, setup
from .adversarial import pgd_accuracy, pgd_examples
from .errors import ReAnalysisError
from .models import Classifier, create_model
from .models.inputs import autocast, normalize, predict_logits, resolve_device
from .optim import lr_at, make_optimizer

__all__ = ["train", "TrainResult", "load_classifier", "natural_accuracy", "resolve_device",
           "normalize", "predict_logits"]

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: Classifier


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


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
    from safetensors import safe_open

    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise ReAnalysisError(f"no trained model in {run_dir} (missing {WEIGHTS}); run `re-analysis train --out {run_dir}` first")
    with safe_open(str(path), framework="pt") as fh:
        info = json.loads(fh.metadata()["model"])
    model = create_model(info["arch"], info["num_classes"], info["in_channels"], info["image_size"])
    if info.get("wrapper"):  # defenses that change the architecture (MID's bottleneck, DP-SGD's GroupNorm)
        w = info["wrapper"]
        model = create_defense(w["defense"], **w.get("params", {})).wrap_model(model)
    model.load_state_dict(load_tensors(path))
    model.train_info = info
    return model.to(device).eval()


def train(config: TrainConfig, out_dir: str | Path | None = None, cache_root: str | Path = "runs",
          progress: bool = True) -> TrainResult:
    """Train (or reuse) the classifier that ``config`` describes.

    The run directory defaults to ``cache_root/train-<config hash>``. A finished run with
    the same config is returned as is; an unfinished one resumes from its last checkpoint;
    a directory holding a different config is refused.
    """
    config = config.resolved()
    key = config.to_dict()
    run_dir = Path(out_dir) if out_dir is not None else Path(cache_root) / f"train-{config_hash(key)}"
    device = resolve_device(config.device)
    defense = create_defense(config.defense, **config.defense_params)
    splits = load_dataset(config.dataset, root=config.root, seed=config.seed, image_size=config.image_size,
                          **config.dataset_params)
    torch.manual_seed(config.seed)
    num_classes = splits.num_classes + (splits.num_public_classes if config.open_set else 0)
    model = create_model(config.arch, num_classes, splits.channels, splits.image_size)
    dist_ = setup(device)
    device = rank_device(device)
    if dist_.enabled and {"dp-sgd", "bido"} & set(config.defense.split("+")):
        raise ReAnalysisError(f"defense {config.defense!r} is not supported under torchrun yet (per-sample "
                              "clipping and HSIC need the whole batch in one process); run it without torchrun")
    if dist_.is_main:
        claim_run_dir(run_dir, key, kind="train")  # only once every input is known to be valid
    barrier()
    if (run_dir / "metrics.json").is_file() and (run_dir / WEIGHTS).is_file():
        return TrainResult(run_dir, read_json(run_dir / "metrics.json"), load_classifier(run_dir, device))

    model = defense.wrap_model(model.to(device)).to(device)  # the classifier that is trained and saved
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model.parameters())
    x_train, y_train = training_data(config, splits)
    x_test, y_test = materialize(splits.private_test)
    x_train, y_train = x_train.to(device), y_train.to(device)
    ckpt = run_dir / CHECKPOINT
    trained, optimizer = defense.configure(model, optimizer, {
        "num_samples": len(y_train), "batch_size": config.batch_size, "epochs": config.epochs, "config": config,
        "splits": splits, "device": device, "resuming": ckpt.is_file()})
    if dist_.enabled:
        trained = torch.nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None)
    start_epoch, history = 0, []
    if ckpt.is_file():
        meta = load_state(ckpt, {"model": unwrap_ddp(trained)}, {"optimizer": optimizer})["meta"]
        start_epoch, history = int(meta["epoch"]), list(meta["history"])

    t0 = time.perf_counter()
    bar = tqdm(range(start_epoch, config.epochs), desc=f"train {config.arch}/{config.defense}",
               initial=start_epoch, total=config.epochs, disable=not progress or not dist_.is_main, leave=False)
    for epoch in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, epoch)
        stats = train_one_epoch(trained, defense, optimizer, x_train, y_train, config, epoch, device,
                                rank=dist_.rank, world=dist_.world)
        history.append({"epoch": epoch + 1, **stats})
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_accuracy']:.3f}")
        if dist_.is_main:
            save_state(ckpt, {"model": unwrap_ddp(trained)}, {"optimizer": optimizer},
                       {"epoch": epoch + 1, "history": history})
        barrier()

    acc = natural_accuracy(model, x_test, y_test)
    metrics = {
        "natural_accuracy": acc,
        "train_accuracy": history[-1]["train_accuracy"] if history else None,
        "dataset": config.dataset, "arch": config.arch, "role": config.role,
        "defense": config.defense, "defense_params": defense.params, "seed": config.seed,
        "epochs": config.epochs, "num_classes": splits.num_classes,
        "train_size": len(y_train), "test_size": len(y_test),
        "history": history, "train_seconds_this_call": round(time.perf_counter() - t0, 3),
        "device": str(device), "world_size": dist_.world, "config_hash": config_hash(key),
        "versions": environment_versions(), **defense.report(), **judge_report(model, config, splits, x_test, y_test),
    }
    if dist_.is_main:
        save_weights(run_dir, model, {"dataset": config.dataset, "defense": config.defense, "role": config.role,
                                      "wrapper": defense.wrapper_info(), "num_private_classes": splits.num_classes,
                                      "open_set": bool(config.open_set)})
        atomic_write_json(run_dir / "metrics.json", metrics)
        ckpt.unlink(missing_ok=True)
    barrier()
    return TrainResult(run_dir, metrics, model.eval())


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


def train_one_epoch(model: nn.Module, defense, optimizer, x_train: torch.Tensor, y_train: torch.Tensor,
                    config: TrainConfig, epoch: int, device: torch.device, rank: int = 0,
                    world: int = 1) -> dict[str, float]:
    """One pass over the private training split; randomness seeded from (seed, epoch).

    Under DDP (``world > 1``) every rank draws the same global order, takes every
    ``world``-th batch slot (a global batch of ``batch_size`` split across ranks), and
    draws its own Random Erasing boxes and dropout from ``(seed, epoch, rank)``.
    """
    s = epoch_seed(config.seed, epoch)
    torch.manual_seed(s + 7919 * rank)
    order_gen = torch.Generator().manual_seed(s)
    aug_gen = torch.Generator(device=device).manual_seed(s + 1 + 7919 * rank)
    perm = torch.randperm(len(y_train), generator=order_gen).to(device)
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for i in range(0, len(perm), config.batch_size):
        if world > 1 and len(perm[i:i + config.batch_size]) < world:
            break  # a last global batch too small to give every rank a sample is dropped on all ranks
        idx = perm[i:i + config.batch_size][rank::world]
        x, y = normalize(x_train[idx]), y_train[idx]
        x = defense.transform_batch(x, y, generator=aug_gen)
        if config.adversarial:  # the robust judge: train on PGD examples (Madry et al. 2018)
            x = pgd_examples(unwrap_ddp(model), x, y, generator=aug_gen, **config.adversarial)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
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
    return {"loss": total_loss / seen, "train_accuracy": correct / seen, "lr": optimizer.param_groups[0]["lr"]}
