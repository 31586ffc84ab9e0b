"""PPA-style attack — "Plug & Play Attacks: Towards Robust and Flexible Model Inversion
Attacks", Struppek et al., ICML 2022, with the public-data GAN (``wgan-gp``) as its prior
instead of a pre-trained StyleGAN (no weights can be downloaded here).

Pipeline: (1) **initial selection**: draw ``candidates`` latents, score each by the
target's confidence for every attacked class averaged over random transforms, keep the
best ``oversample * per_class`` per class; (2) **optimisation** with the Poincaré loss
(hyperbolic distance between the L1-normalised logits and the one-hot label, as in PPA)
under random resized crops and flips; (3) **final selection**: keep the ``per_class``
latents with the highest mean confidence under ``final_transforms`` (100 in PPA) random
transforms. PPA optimises StyleGAN's W space with Adam lr 0.005, betas (0.1, 0.1) for 70
steps; in a DCGAN's z space we keep the betas and use lr 0.05 over 300 steps.
"""

from __future__ import annotations

import torch

from .base import LatentOptimizationAttack, register_attack
from .priors import random_augment


def poincare_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """PPA's Poincaré loss: arccosh(1 + 2|u - v|^2 / ((1 - |u|^2)(1 - |v|^2)))."""
    u = logits / logits.abs().sum(1, keepdim=True)
    v = torch.nn.functional.one_hot(labels, logits.shape[1]).float().clamp(0, 1 - eps)
    num = 2 * (u - v).pow(2).sum(1)
    den = (1 - u.pow(2).sum(1)) * (1 - v.pow(2).sum(1))
    return torch.acosh(1 + num / den).mean()


@register_attack("ppa")
class PPA(LatentOptimizationAttack):
    """PPA-style (Struppek et al., ICML 2022): initial selection, Poincaré loss, final selection under transforms."""

    prior_kind = "wgan-gp"
    defaults = {"iterations": 300, "lr": 0.05, "candidates": 500, "oversample": 2, "init_transforms": 4,
                "final_transforms": 100, "checkpoint_every": 100}

    @torch.no_grad()
    def confidence(self, target, images, labels, n: int, gen) -> torch.Tensor:
        """Mean softmax confidence for ``labels`` over ``n`` random transforms."""
        total = torch.zeros(len(images), device=images.device)
        for _ in range(n):
            total += target(random_augment(images, gen)).softmax(1).gather(1, labels[:, None]).squeeze(1)
        return total / n

    def init_latents(self, labels, prior, seed, device):
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 424_242)
        cand = torch.randn(int(self.params["candidates"]), prior.z_dim, device=device, generator=gen)
        target = self._target
        with torch.no_grad():
            imgs = torch.cat([prior.generator(cand[i:i + 256]) for i in range(0, len(cand), 256)])
            probs = torch.zeros(len(cand), target.num_classes, device=device)
            for _ in range(int(self.params["init_transforms"])):
                probs += target(random_augment(imgs, gen)).softmax(1)
        keep = int(self.params["oversample"])
        rows = []
        for k in labels.unique(sorted=True).tolist():
            n = int((labels == k).sum()) * keep
            rows.append(probs[:, k].topk(min(n, len(cand))).indices)
        z = cand[torch.cat(rows)]
        self._labels = labels.unique(sorted=True).repeat_interleave(
            torch.tensor([len(r) for r in rows], device=device))
        return {"z": z}

    def make_optimizer(self, latents):
        return torch.optim.Adam([latents["z"]], lr=self.params["lr"], betas=(0.1, 0.1))

    def loss(self, latents, labels, target, prior, it, gen):
        x = prior.generator(latents["z"])
        return poincare_loss(target(random_augment(x, gen)), self._labels)

    def run(self, target, prior, labels, seed, state_path=None, progress=True):
        self._target = target  # initial selection scores candidates with the target
        return super().run(target, prior, labels, seed, state_path, progress)

    def finalize(self, latents, labels, target, prior, seed):
        z = latents["z"].detach()
        gen = torch.Generator(device=z.device).manual_seed(seed * 1_000_003 + 777_767)
        with torch.no_grad():
            imgs = prior.generator(z).float()
            score = self.confidence(target, imgs, self._labels, int(self.params["final_transforms"]), gen)
        keep = []
        for k in labels.unique(sorted=True).tolist():
            rows = (self._labels == k).nonzero().squeeze(1)
            n = int((labels == k).sum())
            keep.append(rows[score[rows].topk(n).indices.sort().values])
        keep = torch.cat(keep)
        return imgs[keep], self._labels[keep], z[keep]
