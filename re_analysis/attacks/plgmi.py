"""PLG-MI — "Pseudo Label-Guided Model Inversion Attack via Conditional Generative
Adversarial Network", Yuan et al., AAAI 2023.

Uses the ``plg`` prior: a conditional GAN trained on the public images the target labels
most confidently (pseudo-labels), with the target's max-margin loss already in the
generator's objective. The attack then searches, for each class, latents ``z`` of the
class-conditional generator minimising the max-margin loss of the target on augmented
views (random resized crop and flip). Defaults from the official code: Adam lr 0.1, 600
iterations, 2 augmented views per step.
"""

from __future__ import annotations

import torch

from .base import LatentOptimizationAttack, per_class_seeds, register_attack
from .priors import max_margin_loss, random_augment


@register_attack("plg-mi")
class PLGMI(LatentOptimizationAttack):
    """PLG-MI (Yuan et al., AAAI 2023): pseudo-label conditional GAN, max-margin loss under augmentations."""

    prior_kind = "plg"
    defaults = {"iterations": 600, "lr": 0.1, "views": 2, "checkpoint_every": 100}

    def init_latents(self, labels, prior, seed, device):
        return {"z": per_class_seeds(labels, seed, (prior.z_dim,), device)}

    def make_optimizer(self, latents):
        return torch.optim.Adam([latents["z"]], lr=self.params["lr"])

    def loss(self, latents, labels, target, prior, it, gen):
        x = prior.generator(latents["z"], labels)
        return sum(max_margin_loss(target(random_augment(x, gen)), labels)
                   for _ in range(int(self.params["views"]))) / int(self.params["views"])

    def finalize(self, latents, labels, target, prior, seed):
        z = latents["z"].detach()
        with torch.no_grad():
            return prior.generator(z, labels).float(), labels, z
