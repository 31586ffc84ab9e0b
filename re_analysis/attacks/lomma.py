"""LOMMA — "Re-thinking Model Inversion Attacks Against Deep Neural Networks", Nguyen et
al., CVPR 2023. A wrapper around GMI and KEDMI with two changes:

1. **Logit loss** instead of cross-entropy: ``-z_y(x) + lambda_reg * ||phi(x) - p_reg||^2``
   (mean over feature dimensions), where ``phi`` is the model's penultimate features and
   ``p_reg`` their mean over public images, which keeps the maximised logit from drifting
   to features no real image has.
2. **Model augmentation**: ``n_aug`` models of other architectures are distilled from the
   target on public data (KL between softened outputs, temperature ``tau``) and attacked
   together with the target as an ensemble (loss averaged over models). They are cached
   per target and seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..artifacts import atomic_save_tensors, config_hash, load_tensors
from ..models import create_model
from ..models.inputs import normalize, predict_logits
from .base import register_attack
from .gmi import GMI
from .kedmi import KEDMI

AUG_ARCHS = {28: ("cnn28s", "mlp28", "cnn28"), 64: ("resnet18", "ir152", "vgg16"), 224: ("vgg16", "ir152", "resnet18")}


def distill(target, arch: str, public: torch.Tensor, seed: int, epochs: int, tau: float, device) -> torch.nn.Module:
    """Train ``arch`` to mimic ``target`` on public images (KL on softened outputs)."""
    torch.manual_seed(seed)
    student = create_model(arch, target.num_classes, public.shape[1], public.shape[-1]).to(device)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    teacher = predict_logits(target, public).to(device)
    x_all = public.to(device)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x_all), generator=g).to(device)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            out = student(normalize(x_all[idx]))
            loss = F.kl_div(F.log_softmax(out / tau, 1), F.softmax(teacher[idx] / tau, 1), reduction="batchmean") * tau ** 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return student.eval()


class LOMMAMixin:
    lomma_defaults = {"lambda_reg": 1.0, "n_aug": 2, "distill_epochs": 10, "tau": 1.0}

    def prepare(self, target, prior, public_images, device, seed, cache_dir=None):
        size = public_images.shape[-1]
        archs = [a for a in AUG_ARCHS[min(AUG_ARCHS, key=lambda s: abs(s - size))] if a != getattr(target, "arch", None)]
        self.models = [target]
        for i, arch in enumerate(archs[: int(self.params["n_aug"])]):
            # cache_dir is already specific to the target (the runner names it by the target's config hash)
            key = config_hash({"arch": arch, "seed": seed, "epochs": self.params["distill_epochs"], "tau": self.params["tau"]})
            path = Path(cache_dir) / f"aug-{arch}-{key}.safetensors" if cache_dir else None
            if path is not None and path.is_file():
                student = create_model(arch, target.num_classes, public_images.shape[1], size).to(device)
                student.load_state_dict(load_tensors(path, device=str(device)))
                student.eval()
            else:
                student = distill(target, arch, public_images, seed + i, int(self.params["distill_epochs"]),
                                  float(self.params["tau"]), device)
                if path is not None:
                    atomic_save_tensors(path, student.state_dict())
            for p in student.parameters():
                p.requires_grad_(False)
            self.models.append(student)
        with torch.no_grad():
            self.p_reg = [torch.cat([m.features(normalize(public_images[i:i + 256].to(device)))
                                     for i in range(0, len(public_images), 256)]).mean(0) for m in self.models]

    def identity_loss(self, target, images, labels):
        total = 0.0
        for m, p in zip(self.models, self.p_reg):
            f = m.features(images)
            logit = m.head(f).gather(1, labels[:, None]).squeeze(1)
            total = total + (-logit + self.params["lambda_reg"] * (f - p).pow(2).mean(1)).mean()
        return total / len(self.models)


@register_attack("lomma-gmi")
class LOMMAGMI(LOMMAMixin, GMI):
    """LOMMA + GMI (Nguyen et al., CVPR 2023): logit loss and distilled augmented models."""

    defaults = {**GMI.defaults, **LOMMAMixin.lomma_defaults}


@register_attack("lomma-kedmi")
class LOMMAKEDMI(LOMMAMixin, KEDMI):
    """LOMMA + KEDMI (Nguyen et al., CVPR 2023): logit loss and distilled augmented models."""

    defaults = {**KEDMI.defaults, **LOMMAMixin.lomma_defaults}
