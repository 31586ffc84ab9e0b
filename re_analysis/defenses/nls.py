"""NLS — "Be Careful What You Smooth For: Label Smoothing Can Be a Privacy Shield but Also
a Catalyst for Model Inversion Attacks", Struppek et al., ICLR 2024.

Cross-entropy against smoothed targets ``(1 - a) * onehot + a / C`` with a NEGATIVE
smoothing factor ``a``, on the reference schedule (``ls_scheduler`` in the authors' PPA
repository, and in MIDRE's fork, which both pass it to the training loop), written in
fractions of the ``E`` training epochs so that it scales to any budget:

- epochs ``e < start * E``: no smoothing;
- epochs ``start * E <= e < full * E``: ``a * (e + 1 - start * E) / (E - start * E)``, a
  linear ramp that reaches ``a / 2`` at ``full * E`` when ``full = 0.75``;
- epochs ``e >= full * E``: ``a``.

With the reference's 100 epochs, ``start=0.5``, ``full=0.75`` give exactly its 0 for epochs
0-49, ``a (e - 49) / 50`` for 50-74 and ``a`` from 75 on (the jump from ``a/2`` to ``a`` at
75 is the reference's). Default ``a = -0.05``, the paper's setting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ReAnalysisError
from .base import Defense, register_defense


def nls_factor(epoch: int, epochs: int, alpha: float, start: float = 0.5, full: float = 0.75) -> float:
    """The smoothing factor of 0-based ``epoch`` out of ``epochs`` (see the module doc).

    Example:
        >>> [nls_factor(e, 100, -0.05) for e in (49, 50, 74, 75)]
        [0.0, -0.001, -0.025, -0.05]
    """
    if epoch < start * epochs:
        return 0.0
    if epoch < full * epochs:
        return alpha * (epoch + 1 - start * epochs) / (epochs - start * epochs)
    return alpha


@register_defense("nls", "negative label smoothing on the reference schedule (Struppek et al., ICLR 2024)")
class NLSDefense(Defense):
    """Negative label smoothing with its warm-up schedule (ICLR 2024)."""

    paper = ("Struppek et al., Be Careful What You Smooth For: Label Smoothing Can Be a Privacy Shield but Also "
             "a Catalyst for Model Inversion Attacks, ICLR 2024")
    code = "https://github.com/LukasStruppek/Plug-and-Play-Attacks"
    deviations = (
        ("the schedule's epoch thresholds are fractions of the run (0.5 and 0.75) instead of epochs 50 and 75",
         "the reference trains 100 epochs; fractions give the same schedule there and scale to shorter budgets"),
        ("on short runs the ramp collapses: at 3 epochs NLS is off for epochs 0-1 and at full alpha in the last "
         "(4 epochs: 0, 0, alpha/2, alpha)",
         "the fractions of a few epochs round to whole epochs; the paper's 100 epochs ramp over 25"),
    )
    paper_weights = {"alpha": {"*": -0.05}}  # the paper's setting on every dataset

    def __init__(self, alpha: float = -0.05, start: float = 0.5, full: float = 0.75):
        if not isinstance(alpha, (int, float)) or not -1 < alpha < 1:
            raise ReAnalysisError(f"nls alpha must be a number in (-1, 1) (negative for NLS), got {alpha!r}")
        for k, v in (("start", start), ("full", full)):
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ReAnalysisError(f"nls {k} must be a fraction of the epochs in [0, 1], got {v!r}")
        if full < start:
            raise ReAnalysisError(f"nls full ({full}) must not come before start ({start}); both are fractions of the epochs")
        self.alpha, self.start, self.full = float(alpha), float(start), float(full)
        self.params = {"alpha": self.alpha, "start": self.start, "full": self.full}
        self.epochs: int | None = None
        self.current_epoch: int | None = None

    def configure(self, model, optimizer, data):
        self.epochs = int(data["epochs"])
        return model, optimizer

    def alpha_at(self, epoch: int) -> float:
        """Smoothing factor of ``epoch`` (0-based) in a run of ``self.epochs`` epochs."""
        if self.epochs is None:
            raise ReAnalysisError("nls needs the number of epochs; it is set when training configures the defense")
        return nls_factor(epoch, self.epochs, self.alpha, self.start, self.full)

    def targets(self, y: torch.Tensor, num_classes: int, epoch: int) -> torch.Tensor:
        a = self.alpha_at(epoch)
        return (1 - a) * F.one_hot(y, num_classes).float() + a / num_classes

    def loss(self, model, x, y, epoch):
        self.current_epoch = epoch
        logits = model(x)
        t = self.targets(y, logits.shape[1], epoch)
        return -(t * F.log_softmax(logits.float(), 1)).sum(1).mean(), logits

    def epoch_stats(self):
        """The smoothing factor the epoch just trained used (``history[e]["nls_alpha"]``)."""
        return {"nls_alpha": self.alpha_at(self.current_epoch)} if self.current_epoch is not None else {}
