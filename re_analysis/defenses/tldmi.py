"""TL-DMI — "Model Inversion Robustness: Can Transfer Learning Help?", Ho et al., CVPR 2024
(official code: hosytuyen/TL-DMI).

Pre-train the whole classifier on the PUBLIC split (its own classes, a temporary head),
then fine-tune on the private split with the early layers frozen, which limits how much
private information they encode. Which layers stay frozen follows the official
``models/classify.py``: the children of the feature extractor with index up to and
including ``freeze_layers`` (``0``: the whole extractor), the later children, the
feature head and the classifier trained. Official values (``config/celeba/
training_classifiers/classify.json``): VGG16 26 (``vgg16_bn.features[0..26]``: conv1_1 to
conv4_1 with their BN and ReLU frozen; conv4_2 to conv5_3, BN1d and the classifier
trained), IR152 46 and FaceNet64 5 (bottleneck units of the body; ours count the input
conv, BN and PReLU as three more children, so 49 and 8).

For architectures the official code does not have (the 28 px nets), ``freeze_layers=None``
applies VGG16's share: the first round(8/13 x convs) conv layers of the body (and their
BN and activation) are frozen, everything from the next conv on is trained — for cnn28
and cnn28s the first block (two convs and the pool).

Example:
    >>> from re_analysis.models import create_model
    >>> model = create_model("cnn28s", 5, 1, 28)
    >>> frozen, _ = split_frozen(model, None)
    >>> [n for n, p in model.named_parameters() if any(p is f for f in frozen)][:2]
    ['body.0.weight', 'body.0.bias']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReAnalysisError
from .base import Defense, register_defense

# Official ``freeze_layers`` per architecture, as indices of our ``body`` children (inclusive).
OFFICIAL_FREEZE = {"vgg16": 26, "ir152": 46 + 3, "facenet64": 5 + 3}
VGG16_FROZEN_SHARE = 8 / 13  # official VGG16: 8 of its 13 convs frozen


def body_of(model: nn.Module) -> nn.Module:
    body = getattr(model, "body", None)
    if body is None:
        raise ReAnalysisError("tl-dmi needs a classifier with a `body` (its feature extractor), as every "
                              "re_analysis model has")
    return body


def split_frozen(model: nn.Module, freeze_layers: int | None) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(frozen, trainable) parameters of ``model`` under TL-DMI's rule (module doc).

    ``freeze_layers``: the official index (children of the body up to and including it;
    0 = the whole body); None = the official value for the architecture, else VGG16's share
    of frozen convs."""
    body = body_of(model)
    if freeze_layers is None:
        freeze_layers = OFFICIAL_FREEZE.get(getattr(model, "arch", None))
    children = list(body.children())
    if freeze_layers is not None:
        if not 0 <= freeze_layers < len(children):
            raise ReAnalysisError(f"tl-dmi freeze_layers must be in 0-{len(children) - 1} for this model's body, "
                                  f"got {freeze_layers}")
        modules = children if freeze_layers == 0 else children[:freeze_layers + 1]
        frozen_ids = {id(p) for m in modules for p in m.parameters()}
    else:
        convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]
        k = max(1, round(len(convs) * VGG16_FROZEN_SHARE)) if convs else 0
        frozen_ids = set()
        stop = convs[k].weight if k < len(convs) else None
        for p in body.parameters():
            if p is stop:
                break
            frozen_ids.add(id(p))
    params = list(model.parameters())
    return [p for p in params if id(p) in frozen_ids], [p for p in params if id(p) not in frozen_ids]


@register_defense("tl-dmi", "TL-DMI: pre-train on public data, fine-tune only the last layers (Ho et al., CVPR 2024)")
class TLDMIDefense(Defense):
    """Transfer-learning defense (CVPR 2024): public pre-training, frozen early layers."""

    paper = "Ho et al., Model Inversion Robustness: Can Transfer Learning Help?, CVPR 2024"
    code = "https://github.com/hosytuyen/TL-DMI"
    deviations = (
        ("pre-training runs on the study's public split (disjoint classes of the same dataset)",
         "the official code fine-tunes an ImageNet-pretrained VGG16, whose weights cannot be downloaded here"),
        ("28 px nets (not in the official code) freeze VGG16's share of their convs (8 of 13): cnn28/cnn28s "
         "their first block",
         "the official freeze_layers is given per architecture (VGG16 26, IR152 46, FaceNet64 5); ours apply "
         "those indices to the same architectures"),
        ("IR152/FaceNet64: the input conv, BN and PReLU are frozen",
         "the official code means to freeze them but misspells requires_grad (`requries_grad`), which leaves "
         "them trainable"),
    )

    def __init__(self, freeze_layers: int | None = None, pretrain_epochs: int | None = None, pretrain_lr: float = 1e-3):
        if freeze_layers is not None and (not isinstance(freeze_layers, int) or isinstance(freeze_layers, bool)
                                          or freeze_layers < 0):
            raise ReAnalysisError(f"tl-dmi freeze_layers must be a non-negative integer (an index of the body's "
                                  f"children) or None, got {freeze_layers!r}")
        if pretrain_epochs is not None and (not isinstance(pretrain_epochs, int) or pretrain_epochs < 1):
            raise ReAnalysisError(f"tl-dmi pretrain_epochs must be a positive integer, got {pretrain_epochs!r}")
        self.freeze_layers, self.pretrain_epochs, self.pretrain_lr = freeze_layers, pretrain_epochs, float(pretrain_lr)
        self.params = {"freeze_layers": freeze_layers, "pretrain_epochs": pretrain_epochs, "pretrain_lr": self.pretrain_lr}
        self.frozen: list[nn.Parameter] = []
        self.trainable = 0

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
        self.frozen, trainable = split_frozen(model, self.freeze_layers)
        for p in self.frozen:
            p.requires_grad_(False)
        self.trainable = sum(p.numel() for p in trainable)
        from ..optim import make_optimizer

        return model, make_optimizer(data["config"], trainable)

    def report(self, model=None, x_test=None, y_test=None):
        """How many weights stayed frozen and how many were fine-tuned."""
        return {"tl_dmi_frozen_weights": sum(p.numel() for p in self.frozen), "tl_dmi_trainable_weights": self.trainable}
