"""NLS — "Be Careful What You Smooth For: Label Smoothing Can Be a Privacy Shield but Also
a Catalyst for Model Inversion Attacks", Struppek et al., ICLR 2024.

Cross-entropy against smoothed targets ``(1 - a) * onehot + a / C`` with a NEGATIVE
smoothing factor ``a`` and a warm-up schedule: no smoothing for the first epochs, then a
linear ramp to the full factor. The schedule is passed to the loss at every step — the
reference code built a scheduler and never passed it on, so its runs smoothed with a
constant factor. Default a = -0.05 (the paper's); start and ramp default to a third of the
epochs each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ReAnalysisError
from .base import Defense, register_defense


@register_defense("nls", "negative label smoothing with warm-up (Struppek et al., ICLR 2024)")
class NLSDefense(Defense):
    """Negative label smoothing with its warm-up schedule (ICLR 2024)."""

    name = "nls"

    def __init__(self, alpha: float = -0.05, start_epoch: int | None = None, ramp_epochs: int | None = None):
        if not isinstance(alpha, (int, float)) or not -1 < alpha < 1:
            raise ReAnalysisError(f"nls alpha must be a number in (-1, 1) (negative for NLS), got {alpha!r}")
        for k, v in (("start_epoch", start_epoch), ("ramp_epochs", ramp_epochs)):
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ReAnalysisError(f"nls {k} must be a non-negative integer, got {v!r}")
        self.alpha, self.start_epoch, self.ramp_epochs = float(alpha), start_epoch, ramp_epochs
        self.params = {"alpha": self.alpha, "start_epoch": start_epoch, "ramp_epochs": ramp_epochs}
        self.epochs = None

    def configure(self, model, optimizer, data):
        self.epochs = int(data["epochs"])
        return model, optimizer

    def alpha_at(self, epoch: int) -> float:
        """Smoothing factor of ``epoch`` (0-based): 0, then a linear ramp, then ``alpha``."""
        total = self.epochs or 3
        start = self.start_epoch if self.start_epoch is not None else total // 3
        ramp = self.ramp_epochs if self.ramp_epochs is not None else total // 3
        if epoch < start:
            return 0.0
        if ramp == 0 or epoch >= start + ramp:
            return self.alpha
        return self.alpha * (epoch - start + 1) / (ramp + 1)

    def targets(self, y: torch.Tensor, num_classes: int, epoch: int) -> torch.Tensor:
        a = self.alpha_at(epoch)
        return (1 - a) * F.one_hot(y, num_classes).float() + a / num_classes

    def loss(self, model, x, y, epoch):
        logits = model(x)
        t = self.targets(y, logits.shape[1], epoch)
        return -(t * F.log_softmax(logits.float(), 1)).sum(1).mean(), logits
