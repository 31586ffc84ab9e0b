"""``@register_model(name)`` (timm style), ``create_model`` and ``list_models``."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from ..errors import ReAnalysisError

_MODELS: dict[str, Callable[..., "Classifier"]] = {}
_DESCRIPTIONS: dict[str, str] = {}


class Classifier(nn.Module):
    """A classifier split at its penultimate layer: ``forward(x) == head(features(x))``."""

    feature_dim: int
    num_classes: int

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, f: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def register_model(name: str, description: str = ""):
    def deco(fn):
        _MODELS[name] = fn
        _DESCRIPTIONS[name] = description or (inspect.getdoc(fn) or "").split("\n")[0]
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_info() -> dict[str, str]:
    return {k: _DESCRIPTIONS[k] for k in list_models()}


def create_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 64) -> Classifier:
    """Build a registered classifier with random weights (nothing is downloaded)."""
    if name not in _MODELS:
        raise ReAnalysisError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    if num_classes < 2:
        raise ReAnalysisError(f"num_classes must be at least 2, got {num_classes}")
    model = _MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    model.arch = name
    model.in_channels = in_channels
    model.image_size = image_size
    return model


def flat_dim(module: nn.Module, in_channels: int, image_size: int) -> int:
    """Output width of ``module`` on one input of the given shape (to size a head)."""
    with torch.no_grad():
        was = module.training
        module.eval()
        out = module(torch.zeros(1, in_channels, image_size, image_size))
        module.train(was)
    return out.flatten(1).shape[1]
