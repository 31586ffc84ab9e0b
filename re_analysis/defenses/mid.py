"""MID — "Improving Robustness to Model Inversion Attacks via Mutual Information
Regularization", Wang et al., AAAI 2021 (official code: Jiachen-T-Wang/mi-defense).

A variational information bottleneck on the penultimate layer: the features f go through
a linear layer to (mu, std) of a k-dimensional Gaussian (k = feature_dim // 2, as the
official ``VGG16_vib``: 1,024 at 64 px, and ``MCNN_vib``: 128; std = softplus(s - 5)), a
sample z = mu + std * eps feeds the classifier; loss = CE + beta * KL(N(mu, std) || N(0, I))
with the KL in closed form ``-0.5 * sum(1 + 2 log std - mu^2 - std^2)`` per sample, averaged.
beta per dataset (``paper_weights``): 0.003 for CelebA (mi-defense ``train_vib.py``), 0.1 for
MNIST (Defend_MI ``BiDO/train_vib.py``); other datasets take the nearest (identities: CelebA).

**At evaluation and attack time** the official model samples z in every forward, so its
predictions are random and an attack follows noisy gradients. ``eval_sampling=False``
(default) uses the mean mu outside training instead: deterministic and resumable, and the
attacks see the noise-free model (gradient noise is obfuscation, which a careful attacker
averages away), so MID's numbers here are its robustness without that noise.
``eval_sampling=True`` is the official behaviour (draws from torch's global generator).

Example:
    >>> import torch
    >>> from re_analysis.models import create_model
    >>> m = VIBClassifier(create_model("cnn28", 5, 1, 28)).eval()
    >>> x = torch.zeros(2, 1, 28, 28)
    >>> bool(torch.equal(m(x), m(x)))  # the mean at test time (eval_sampling=False)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReAnalysisError
from ..models import Classifier
from .base import Defense, official_weight, register_defense


class VIBClassifier(Classifier):
    """``base.features`` -> (mu, std) -> z -> linear classifier; ``features(x)`` returns mu."""

    def __init__(self, base: Classifier, eval_sampling: bool = False):
        super().__init__()
        self.base, self.eval_sampling = base, eval_sampling
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
        if not self.training and not self.eval_sampling:
            return self.fc(mu)
        z = mu + std * torch.randn_like(std)
        if self.training:
            self.last_kl = kl_to_standard_normal(mu, std)
        return self.fc(z)


def kl_to_standard_normal(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, std^2) || N(0, I)) in closed form, summed over dimensions and averaged over
    the batch (the official ``info_loss``)."""
    return -0.5 * (1 + 2 * torch.log(std + 1e-8) - mu.pow(2) - std.pow(2)).sum(1).mean()


@register_defense("mid", "MID: variational information bottleneck, CE + beta * KL (Wang et al., AAAI 2021)")
class MIDDefense(Defense):
    """Mutual-information regularisation through a variational bottleneck (AAAI 2021)."""

    paper = ("Wang et al., Improving Robustness to Model Inversion Attacks via Mutual Information "
             "Regularization, AAAI 2021")
    code = "https://github.com/Jiachen-T-Wang/mi-defense"
    deviations = (
        ("outside training the classifier reads the mean mu (eval_sampling=False); the official model samples "
         "z in every forward, attacks included",
         "deterministic, resumable runs, and attacks on the noise-free model (noisy gradients obfuscate, they do "
         "not protect); eval_sampling=True restores the official behaviour"),
        ("beta 0.003 (CelebA's) on glyphs, FaceScrub and other identity data; 0.1 (MNIST's) on digits and "
         "Fashion-MNIST",
         "the official code gives beta for CelebA and MNIST only"),
    )
    paper_weights = {"beta": {"celeba": 0.003, "mnist": 0.1}}

    def __init__(self, beta: float | None = None, eval_sampling: bool = False):
        if beta is not None and (not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0):
            raise ReAnalysisError(f"mid beta must be a non-negative number, got {beta!r}")
        if not isinstance(eval_sampling, bool):
            raise ReAnalysisError(f"mid eval_sampling must be true or false, got {eval_sampling!r}")
        self.given_beta, self.eval_sampling = beta, eval_sampling
        self.beta = None if beta is None else float(beta)
        self.params = {"beta": self.beta, "eval_sampling": eval_sampling}

    def check(self, splits):
        """Resolve beta for the data (official or nearest official) and record its source."""
        value, source = ((self.given_beta, "given") if self.given_beta is not None
                         else official_weight(self, "beta", splits))
        self.beta = float(value)
        self.params.update({"beta": self.beta, "beta_source": source})

    def wrap_model(self, model):
        return VIBClassifier(model, self.eval_sampling)

    def loss(self, model, x, y, epoch):
        if self.beta is None:
            raise ReAnalysisError("mid: call check(splits) first, it resolves the dataset's beta")
        logits = model(x)
        from ..distributed import unwrap

        return F.cross_entropy(logits, y) + self.beta * unwrap(model).last_kl, logits

    def wrapper_info(self):
        return {"defense": "mid", "params": {"beta": self.beta, "eval_sampling": self.eval_sampling}}
