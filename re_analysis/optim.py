"""The training recipe's optimiser and learning-rate schedule, shared by the training loop
and the defenses that build their own optimiser (TL-DMI fine-tunes a subset of layers).

Example:
    >>> from re_analysis.config import TrainConfig
    >>> from re_analysis.optim import lr_at
    >>> cfg = TrainConfig(epochs=100)
    >>> lr_at(cfg, 0), round(lr_at(cfg, 80), 6), round(lr_at(cfg, 95), 7)
    (0.001, 0.0001, 1e-05)
"""

from __future__ import annotations

from bisect import bisect_right

import torch

from .config import TrainConfig

__all__ = ["lr_at", "make_optimizer"]


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Step decay: ``lr * gamma ** (number of milestones passed)`` (MultiStepLR semantics)."""
    marks = sorted(round(m * config.epochs) for m in config.milestones)
    return config.lr * config.gamma ** bisect_right(marks, epoch)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
