"""MID — "Improving Robustness to Model Inversion Attacks via Mutual Information
Regularization", Wang et al., AAAI 2021.

A variational information bottleneck on the penultimate layer: the features f go through
a linear layer to (mu, std) of a k-dimensional Gaussian (k = feature_dim // 2,
std = softplus(s - 5), as in the official code), a sample z = mu + std * eps feeds the
classifier in training and the mean mu at test; loss = CE + beta * KL(N(mu, std) || N(0, I)).
Default beta = 0.003, the official code's setting for its VGG16 targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReAnalysisError
from ..models import Classifier
from .base import Defense, register_defense


class VIBClassifier(Classifier):
    """``base.features`` -> (mu, std) -> z -> linear classifier; ``features(x)`` returns mu."""

    def __init__(self, base: Classifier):
        super().__init__()
        self.base = base
        self.k = max(1, base.feature_dim // 2)
        self.stats = nn.Linear(base.feature_dim, 2 * self.k)
        self.fc = nn.Linear(self.k, base.num_classes)
        for attr in ("arch", "in_channels", "image_size", "num_classes"):
            setattr(self, attr, getattr(base, attr))
        self.feature_dim = self.k
        self.last_kl = None

    def encode(self, x):
        s = self.stats(self.base.features(x))
        return s[:, :self.k], F.softplus(s[:, self.k:] - 5, beta=1)

    def features(self, x):
        return self.encode(x)[0]

    def head(self, f):
        return self.fc(f)

    def forward(self, x):
        mu, std = self.encode(x)
        if not self.training:
            return self.fc(mu)
        z = mu + std * torch.randn_like(std)
        self.last_kl = -0.5 * (1 + 2 * torch.log(std + 1e-8) - mu.pow(2) - std.pow(2)).sum(1).mean()
        return self.fc(z)


@register_defense("mid", "MID: variational information bottleneck, CE + beta * KL (Wang et al., AAAI 2021)")
class MIDDefense(Defense):
    """Mutual-information regularisation through a variational bottleneck (AAAI 2021)."""

    name = "mid"
    paper = ("Wang et al., Improving Robustness to Model Inversion Attacks via Mutual Information "
             "Regularization, AAAI 2021")
    code = "https://github.com/Jiachen-T-Wang/mi-defense"
    deviations = (
        ("the bottleneck has feature_dim // 2 dimensions on every architecture",
         "the official code sets k per architecture (e.g. 256 for its VGG16); ours follows the same halving rule"),
    )

    def __init__(self, beta: float = 0.003):
        if not isinstance(beta, (int, float)) or beta < 0:
            raise ReAnalysisError(f"mid beta must be a non-negative number, got {beta!r}")
        self.beta = float(beta)
        self.params = {"beta": self.beta}

    def wrap_model(self, model):
        return VIBClassifier(model)

    def loss(self, model, x, y, epoch):
        logits = model(x)
        from ..distributed import unwrap

        return F.cross_entropy(logits, y) + self.beta * unwrap(model).last_kl, logits

    def wrapper_info(self):
        return {"defense": "mid", "params": self.params}
