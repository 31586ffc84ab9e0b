"""TL-DMI — "Model Inversion Robustness: Can Transfer Learning Help?", Ho et al., CVPR 2024.

Pre-train the whole classifier on the PUBLIC split (its own classes, a temporary head),
then fine-tune only the last ``finetune_layers`` parameterised layers on the private split
with everything before them frozen, which limits how much private information the early
layers encode. Default: the last 2 layers (penultimate block and classifier) and as many
pre-training epochs as fine-tuning epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReAnalysisError
from .base import Defense, register_defense


def layer_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def split_frozen(model: nn.Module, finetune_layers: int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(frozen, trainable) parameters: trainable = the last ``finetune_layers`` layers and all after them."""
    layers = layer_modules(model)
    if not 1 <= finetune_layers <= len(layers):
        raise ReAnalysisError(f"tl-dmi finetune_layers must be in 1-{len(layers)} for this model, got {finetune_layers}")
    first = layers[-finetune_layers].weight
    params = list(model.parameters())
    cut = next(i for i, p in enumerate(params) if p is first)
    return params[:cut], params[cut:]


@register_defense("tl-dmi", "TL-DMI: pre-train on public data, fine-tune only the last layers (Ho et al., CVPR 2024)")
class TLDMIDefense(Defense):
    """Transfer-learning defense (CVPR 2024): public pre-training, frozen early layers."""

    name = "tl-dmi"
    paper = "Ho et al., Model Inversion Robustness: Can Transfer Learning Help?, CVPR 2024"
    code = "https://github.com/hosytuyen/TL-DMI"
    deviations = (
        ("pre-training runs on the study's public split (disjoint classes of the same dataset)",
         "the official code fine-tunes an ImageNet-pretrained VGG16, whose weights cannot be downloaded here"),
    )

    def __init__(self, finetune_layers: int = 2, pretrain_epochs: int | None = None, pretrain_lr: float = 1e-3):
        if not isinstance(finetune_layers, int) or finetune_layers < 1:
            raise ReAnalysisError(f"tl-dmi finetune_layers must be a positive integer, got {finetune_layers!r}")
        if pretrain_epochs is not None and (not isinstance(pretrain_epochs, int) or pretrain_epochs < 1):
            raise ReAnalysisError(f"tl-dmi pretrain_epochs must be a positive integer, got {pretrain_epochs!r}")
        self.finetune_layers, self.pretrain_epochs, self.pretrain_lr = finetune_layers, pretrain_epochs, float(pretrain_lr)
        self.params = {"finetune_layers": finetune_layers, "pretrain_epochs": pretrain_epochs, "pretrain_lr": self.pretrain_lr}
        self.frozen: list[nn.Parameter] = []

    def pretrain(self, model, data) -> None:
        """Train all layers on the public split with a temporary head for the public classes,
        on the same standard augmentation as the private training (``data["inputs"]``)."""
        from ..data import materialize
        from ..models.inputs import normalize

        cfg, splits, device = data["config"], data["splits"], data["device"]
        augment = data.get("inputs") or (lambda images, _seed: normalize(images))
        x, y = materialize(splits.public)
        x, y = x.to(device), y.to(device)
        private_head = model.fc
        model.fc = nn.Linear(private_head.in_features, splits.num_public_classes).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=self.pretrain_lr)
        g = torch.Generator().manual_seed(cfg.seed + 17)
        model.train()
        for epoch in range(self.pretrain_epochs or cfg.epochs):
            perm = torch.randperm(len(y), generator=g).to(device)
            for b, i in enumerate(range(0, len(perm), cfg.batch_size)):
                idx = perm[i:i + cfg.batch_size]
                seed = (cfg.seed + 17) * 1_000_003 + epoch * 10_007 + b
                loss = F.cross_entropy(model(augment(x[idx], seed)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.fc = private_head

    def configure(self, model, optimizer, data):
        if not hasattr(model, "fc"):
            raise ReAnalysisError("tl-dmi needs a classifier whose last layer is `fc` (every re_analysis model)")
        if not data.get("resuming"):
            self.pretrain(model, data)
        self.frozen, trainable = split_frozen(model, self.finetune_layers)
        for p in self.frozen:
            p.requires_grad_(False)
        from ..optim import make_optimizer

        return model, make_optimizer(data["config"], trainable)
