"""LOMMA — "Re-thinking Model Inversion Attacks Against Deep Neural Networks", Nguyen et
al., CVPR 2023 (official code: sutd-visual-computing-group/Re-thinking_MI). A wrapper
around GMI and KEDMI with two changes, as in the official ``attack.py``:

1. **Logit loss** instead of cross-entropy: the identity loss is the mean over the
   target and its augmented models of ``-z_y(x)`` (the logit of the attacked class),
   plus, on the TARGET only, ``lambda_reg * mean((phi(x) - p_reg)^2)`` where ``phi`` is
   the target's penultimate features and ``p_reg`` their mean over a seeded random sample
   of (up to) 5,000 public images; lambda_reg 1. The regulariser keeps the maximised logit from drifting to
   features no real image has; the augmented models add logits only. Its weight against
   the logits depends on the scale of the features: LOMMA's targets (GMI's VGG16, IR-152,
   FaceNet64) end in ``BatchNorm1d``, features of about unit variance, while ours end in a
   ReLU (the quick glyph target: variance 37 per dimension on public images, so the raw
   regulariser outweighed the logits about 37 times and the target accepted 35% of
   LOMMA-GMI's reconstructions against GMI's 97.5%). By default (``reg_units="public"``)
   the regulariser is therefore measured in units of the mean per-dimension variance of
   the public features; ``reg_units="raw"`` is the official formula as written.
2. **Model augmentation**: 3 models of other architectures distilled from the target on
   public data (official ``train_augmodel``: KL divergence at temperature 1 summed over
   the batch, divided by T^2 and the batch size; SGD lr 0.01, momentum 0.9, weight decay
   1e-4, 20 epochs of batches of 64), attacked together with the target. They are cached
   per target and seed.

Budgets from the official attack config: 2,400 iterations for both wrappers (GMI's
Nesterov SGD and KEDMI's Adam, lr as in those attacks).

Example:
    >>> from re_analysis.attacks import create_attack
    >>> create_attack("lomma-gmi").params["n_aug"]
    3
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import atomic_save_tensors, config_hash, load_tensors
from ..models import create_model
from ..models.inputs import channels_last, normalize, predict_logits
from ..models.levers import lever, retain_freed_memory
from ..models.registry import Classifier
from .base import frozen_models, register_attack
from .gmi import GMI
from .kedmi import KEDMI

LOMMA_CODE = "https://github.com/sutd-visual-computing-group/Re-thinking_MI"
# Students by image size, first three that differ from the target's architecture. LOMMA's own
# are EfficientNet-B0/B1/B2 (64 px and up), far lighter than its targets (VGG16, IR152,
# FaceNet64); at 28 px small nets of other shapes, none costlier than the digit target cnn28.
STUDENTS = {28: ("cnn28s", "mlp28", "lenet28", "cnn28"),
            64: ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "resnet18")}


class EfficientNetStudent(Classifier):
    """torchvision EfficientNet (random init), LOMMA's augmented model, split at its pooled features."""

    def __init__(self, variant: str, num_classes: int, in_channels: int = 3):
        super().__init__()
        from torchvision import models as tvm

        net = getattr(tvm, variant)(weights=None)
        if in_channels != 3:
            first = net.features[0][0]
            net.features[0][0] = nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride,
                                           first.padding, bias=False)
        self.body = nn.Sequential(net.features, net.avgpool, nn.Flatten())
        self.feature_dim = net.classifier[1].in_features
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.num_classes = num_classes

    def features(self, x):
        return self.body(x)

    def head(self, f):
        return self.fc(f)


def build_student(arch: str, num_classes: int, channels: int, size: int) -> Classifier:
    """A student by name: a registered model or an EfficientNet."""
    if arch.startswith("efficientnet"):
        model = EfficientNetStudent(arch, num_classes, channels)
    else:
        return create_model(arch, num_classes, channels, size)
    model.arch = arch
    return model


def student_archs(target_arch: str | None, size: int, n: int) -> list[str]:
    family = STUDENTS[28 if size <= 32 else 64]
    return [a for a in family if a != target_arch][:n]


def distill(target, arch: str, public: torch.Tensor, seed: int, epochs: int, tau: float, device,
            batch_size: int = 64, lr: float = 0.01, teacher: torch.Tensor | None = None) -> nn.Module:
    """Train ``arch`` to mimic ``target`` on public images (LOMMA's ``train_augmodel``);
    ``teacher``: the target's logits on ``public``, when the caller has them already."""
    retain_freed_memory()
    torch.manual_seed(seed)
    student = channels_last(build_student(arch, target.num_classes, public.shape[1], public.shape[-1]).to(device))
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)
    teacher = (predict_logits(target, public) if teacher is None else teacher).to(device)
    x_all = public.to(device)
    g = torch.Generator().manual_seed(seed)
    bf16 = lever("bf16_distillation")  # reduced precision, off by default (models.levers)
    student.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_all), generator=g).to(device)
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            with torch.autocast(x_all.device.type, dtype=torch.bfloat16, enabled=bf16):
                out = student(channels_last(normalize(x_all[idx]))).float()
            kl = F.kl_div(F.log_softmax(out / tau, 1), F.softmax(teacher[idx] / tau, 1), reduction="sum")
            loss = kl / tau ** 2 / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return student.eval()


class LOMMAMixin:
    lomma_defaults = {"lambda_reg": 1.0, "reg_units": "public", "n_aug": 3, "distill_epochs": 20, "tau": 1.0,
                      "reg_samples": 5000}
    lomma_choices = {"reg_units": ("public", "raw")}
    lomma_deviations = (
        ("students at 28 px: three of cnn28s, mlp28, lenet28, cnn28 other than the target's architecture "
         "(official: EfficientNet-B0/B1/B2 at 64 px)",
         "EfficientNets downsample 28 px images to nothing; the students keep LOMMA's point, other "
         "architectures than the target's and lighter than it (EfficientNet-B0 costs a few percent of a "
         "64 px VGG16); none costs more than cnn28 (benchmarks/RESULTS.md)"),
        ("the feature regulariser in units of the public features' variance (reg_units='public'; "
         "official: raw squared distance)",
         "LOMMA's targets end in BatchNorm1d (features of about unit variance), ours in a ReLU (variance 37 "
         "on glyphs): raw, the regulariser outweighs the logit loss and the target rejects 65% of the "
         "reconstructions; 'raw' keeps the official formula"),
    )

    def prepare(self, target, prior, public_images, device, seed, cache_dir=None):
        size = public_images.shape[-1]
        self.models = [target]
        teacher = None  # the target's logits on the public images, once for every student (a lever)
        for i, arch in enumerate(student_archs(getattr(target, "arch", None), size, int(self.params["n_aug"]))):
            # cache_dir is already specific to the target (the runner names it by the target's config hash)
            key = config_hash({"arch": arch, "seed": seed, "epochs": self.params["distill_epochs"],
                               "tau": self.params["tau"], "recipe": "lomma-sgd"})
            path = Path(cache_dir) / f"aug-{arch}-{key}.safetensors" if cache_dir else None
            if path is not None and path.is_file():
                student = build_student(arch, target.num_classes, public_images.shape[1], size).to(device)
                student.load_state_dict(load_tensors(path, device=str(device)))
                channels_last(student.eval())  # as distill() leaves a fresh one: a resumed run computes the same
            else:
                if teacher is None and lever("teacher_once"):
                    teacher = predict_logits(target, public_images)
                student = distill(target, arch, public_images, seed + i, int(self.params["distill_epochs"]),
                                  float(self.params["tau"]), device, teacher=teacher)
                if path is not None:
                    atomic_save_tensors(path, student.state_dict())
            for p in student.parameters():
                p.requires_grad_(False)
            self.models.append(student)
        # official get_act_reg: the first 5,000 images of a SHUFFLED public loader; a seeded
        # sample here (public splits are stored identity by identity, so a prefix would miss most)
        order = torch.randperm(len(public_images), generator=torch.Generator().manual_seed(seed + 5000))
        reg = public_images[order[: int(self.params["reg_samples"])]]
        with torch.no_grad():
            feats = torch.cat([target.features(normalize(reg[i:i + 256].to(device)))
                               for i in range(0, len(reg), 256)]).float()
        self.p_reg = feats.mean(0)
        # official get_act_reg: the mean of the public features; the unit is ours (module doc)
        self.reg_unit = (feats.var(0, unbiased=False).mean().clamp_min(1e-12)
                         if self.params["reg_units"] == "public" else torch.tensor(1.0, device=feats.device))

    def setup(self, target, prior, labels):
        super().setup(target, prior, labels)
        # the latent search reads the target it is handed (a frozen copy under the levers) and
        # frozen copies of the students (same function, fewer operations)
        self.models = [target] + [frozen_models(m, None)[0] for m in self.models[1:]]

    def identity_loss(self, target, images, labels):
        """Per row: the mean over models of -logit_y, plus the feature regulariser (mean
        squared distance over feature dimensions) on the target alone. Their mean over rows
        is the official ``iden_loss``."""
        logit_loss, reg = 0.0, 0.0
        for i, m in enumerate(self.models):
            f = m.features(images)
            logit_loss = logit_loss - m.head(f).gather(1, labels[:, None]).squeeze(1)
            if i == 0:  # the target (official: ``reg only with the target classifier``)
                reg = (f - self.p_reg).pow(2).flatten(1).mean(1) / self.reg_unit
        return logit_loss / len(self.models) + self.params["lambda_reg"] * reg


@register_attack("lomma-gmi")
class LOMMAGMI(LOMMAMixin, GMI):
    """LOMMA + GMI (Nguyen et al., CVPR 2023): logit loss and distilled augmented models."""

    defaults = {**GMI.defaults, "iterations": 2400, **LOMMAMixin.lomma_defaults}
    # LOMMA's attack averages over batches of 60 identities (recovery.py, bs = 60); it has no
    # grayscale setting, so grayscale keeps GMI's MNIST batch of 5.
    official_identities = {1: 5, 3: 60}
    paper = "Nguyen et al., Re-thinking Model Inversion Attacks Against Deep Neural Networks, CVPR 2023 (on GMI)"
    code = LOMMA_CODE
    paper_budget = {"iterations": 2400, "n_aug": 3, "distill_epochs": 20}
    choices = {**GMI.choices, **LOMMAMixin.lomma_choices}
    deviations = GMI.deviations + LOMMAMixin.lomma_deviations


@register_attack("lomma-kedmi")
class LOMMAKEDMI(LOMMAMixin, KEDMI):
    """LOMMA + KEDMI (Nguyen et al., CVPR 2023): logit loss and distilled augmented models."""

    defaults = {**KEDMI.defaults, **LOMMAMixin.lomma_defaults}
    paper = "Nguyen et al., Re-thinking Model Inversion Attacks Against Deep Neural Networks, CVPR 2023 (on KEDMI)"
    code = LOMMA_CODE
    paper_budget = {"iterations": 2400, "n_aug": 3, "distill_epochs": 20}
    choices = {**KEDMI.choices, **LOMMAMixin.lomma_choices}
    deviations = KEDMI.deviations + LOMMAMixin.lomma_deviations
