"""``@register_model(name)`` (timm style), ``create_model`` and ``list_models``."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ReAnalysisError
from ..registry import Registry

MODELS = Registry("model")


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
    """Register a factory ``fn(num_classes, in_channels, image_size) -> Classifier``."""
    return MODELS.register(name, description)


def list_models() -> list[str]:
    return MODELS.names()


def model_info() -> dict[str, str]:
    return MODELS.info()


def create_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 64) -> Classifier:
    """Build a registered classifier with random weights (nothing is downloaded)."""
    factory = MODELS.get(name)
    if num_classes < 2:
        raise ReAnalysisError(f"num_classes must be at least 2, got {num_classes}")
    model = factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
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
