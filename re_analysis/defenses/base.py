"""The defense interface and registry (``@register_defense(name)``, timm style)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReAnalysisError
from ..registry import Registry

DEFENSES = Registry("defense")


class Defense:
    """Hooks of the one training loop; a defense overrides only what it changes.

    - ``transform_batch(x, y, generator)``: training inputs after ``Normalize(0.5, 0.5)``.
    - ``wrap_model(model)``: returns the module that is trained.
    - ``loss(model, x, y, epoch)``: returns ``(loss, logits)``; default cross-entropy.
    - ``configure(model, optimizer, data)``: a chance to swap the engine (DP-SGD).
    - ``report()``: extra numbers for ``metrics.json``.
    """

    name = "none"

    def __init__(self, **params: Any):
        if params:
            raise ReAnalysisError(f"defense {self.name!r} takes no parameters, got {', '.join(sorted(params))}")
        self.params: dict[str, Any] = {}

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int):
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    def configure(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: dict):
        return model, optimizer

    def report(self) -> dict[str, Any]:
        return {}

    def wrapper_info(self) -> dict[str, Any] | None:
        """How to rebuild the trained architecture when ``wrap_model`` changed it (None: unchanged)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def register_defense(name: str, description: str = ""):
    """Register a :class:`Defense` subclass (or factory) under ``name``."""
    return DEFENSES.register(name, description)


def list_defenses() -> list[str]:
    return DEFENSES.names()


def defense_info() -> dict[str, str]:
    return DEFENSES.info()


def create_defense(name: str, **params: Any) -> Defense:
    """Instantiate a registered defense; parameters are validated at once.

    ``"random-erasing+nls"`` composes defenses (see :class:`ComposedDefense`).
    """
    if "+" in name:
        from .compose import ComposedDefense

        return ComposedDefense(name, **params)
    factory = DEFENSES.get(name)
    try:
        return factory(**params)
    except TypeError as exc:
        raise ReAnalysisError(f"bad parameter for defense {name!r}: {exc}; see `re-analysis defenses`") from None


@register_defense("none", "no defense: plain cross-entropy training")
class NoDefense(Defense):
    name = "none"
