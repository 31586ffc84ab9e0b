"""KEDMI — "Knowledge-Enriched Distributional Model Inversion Attacks", Chen et al.,
ICCV 2021.

Uses the inversion-specific GAN (``kedmi`` prior: the discriminator learned the target's
soft labels) and learns, for each attacked class, a Gaussian latent distribution
(mean, log-std) by reparameterisation. Loss per the official code: prior loss
``mean(softplus(lse(D(x)))) - mean(lse(D(x)))`` (lse = logsumexp of the class logits)
plus ``lambda * CE(T(x), y)``, lambda 100, Adam lr 0.02, 1,500 iterations. Final
reconstructions are ``per_class`` samples from each learned distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LatentOptimizationAttack, register_attack
from .gmi import identity_ce


@register_attack("kedmi")
class KEDMI(LatentOptimizationAttack):
    """KEDMI (Chen et al., ICCV 2021): learned latent distribution per class, inversion-specific GAN."""

    prior_kind = "kedmi"
    defaults = {"iterations": 1500, "lr": 0.02, "lam": 100.0, "checkpoint_every": 100}

    def init_latents(self, labels, prior, seed, device):
        # one distribution per attacked (class, restart) row: mean 0, log-std 0 (unit Gaussian)
        return {"mu": torch.zeros(len(labels), prior.z_dim, device=device),
                "log_std": torch.zeros(len(labels), prior.z_dim, device=device)}

    def make_optimizer(self, latents):
        return torch.optim.Adam([latents["mu"], latents["log_std"]], lr=self.params["lr"])

    @staticmethod
    def sample(latents, gen):
        eps = torch.randn(latents["mu"].shape, device=latents["mu"].device, generator=gen)
        return latents["mu"] + eps * latents["log_std"].exp()

    def identity_loss(self, target, images, labels):
        return identity_ce(target, images, labels)

    def loss(self, latents, labels, target, prior, it, gen):
        x = prior.generator(self.sample(latents, gen))
        lse = torch.logsumexp(prior.discriminator(x), 1)
        prior_loss = F.softplus(lse).mean() - lse.mean()
        return prior_loss + self.params["lam"] * self.identity_loss(target, x, labels)

    def finalize(self, latents, labels, target, prior, seed):
        gen = torch.Generator(device=labels.device).manual_seed(seed * 1_000_003 + 999_983)
        with torch.no_grad():
            z = self.sample({k: v.detach() for k, v in latents.items()}, gen)
            return prior.generator(z).float(), labels, z
