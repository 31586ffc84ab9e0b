"""GMI — "The Secret Revealer: Generative Model-Inversion Attacks Against Deep Neural
Networks", Zhang et al., CVPR 2020.

Latent search in a WGAN-GP prior trained on public data: minimise
``prior_loss + lambda * identity_loss`` with prior loss ``-D(G(z))`` and identity loss the
target's cross-entropy for the attacked class. Defaults from the official code: lambda 100,
SGD lr 0.02 momentum 0.9, 1,500 iterations, z clipped to [-1, 1] after every step, several
random restarts (here: ``per_class`` restarts per class, all optimised in one batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LatentOptimizationAttack, per_class_seeds, register_attack


def identity_ce(target, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(target(images), labels)


@register_attack("gmi")
class GMI(LatentOptimizationAttack):
    """GMI (Zhang et al., CVPR 2020): WGAN-GP prior, prior loss + 100 x identity loss, SGD."""

    prior_kind = "wgan-gp"
    defaults = {"iterations": 1500, "lr": 0.02, "momentum": 0.9, "lam": 100.0, "clip": 1.0,
                "checkpoint_every": 100}

    def init_latents(self, labels, prior, seed, device):
        return {"z": per_class_seeds(labels, seed, (prior.z_dim,), device).clamp(-self.params["clip"], self.params["clip"])}

    def make_optimizer(self, latents):
        return torch.optim.SGD([latents["z"]], lr=self.params["lr"], momentum=self.params["momentum"])

    def identity_loss(self, target, images, labels):
        return identity_ce(target, images, labels)

    def loss(self, latents, labels, target, prior, it, gen):
        x = prior.generator(latents["z"])
        prior_loss = -prior.discriminator(x).mean()
        return prior_loss + self.params["lam"] * self.identity_loss(target, x, labels)

    def project(self, latents):
        c = self.params["clip"]
        latents["z"].clamp_(-c, c)
