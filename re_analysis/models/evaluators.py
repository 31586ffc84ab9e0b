"""Evaluation-model architectures: different from, and stronger than, every target.

The MI protocol judges reconstructions with a separate evaluation model of another
architecture (GMI, Zhang et al. CVPR 2020; PPA, Struppek et al. ICML 2022), because a
judge that shares the target's architecture and data accepts what fools the target
(Ho et al., "Revisiting Model Inversion Evaluation", arXiv 2505.03519).

- ``preresnet8`` / ``preresnet20``: pre-activation ResNets for 28-32 px (He et al.,
  "Identity Mappings in Deep Residual Networks", ECCV 2016; the CIFAR layout of 16/32/64
  channels, 1 or 3 basic blocks per stage, global average pooling). The suite's small
  targets (``cnn28``) are plain conv-pool stacks; these are residual, deeper and pool
  globally. ``preresnet8`` is the default evaluation model at 28-32 px because it trains
  in about the time of ``cnn28`` on a CPU (measured in the evaluation report).
- ``inception-v3``: torchvision's Inception-v3 (Szegedy et al., CVPR 2016), the evaluation
  model of PPA and MIDRE at 224-299 px (random init; nothing is downloaded).

Written here because torchvision has no small-image pre-activation ResNet.

Example:
    >>> from re_analysis.models import create_model
    >>> m = create_model("preresnet8", num_classes=10, in_channels=1, image_size=28)
    >>> m.feature_dim
    64
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from .registry import Classifier, register_model
from .small import check_size


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3, plus an identity (or 1x1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def fold_batchnorm(self) -> None:
        """Fold the eval-mode ``bn2`` into ``conv1`` in place (``bn1`` follows a sum, not a conv)."""
        from .frozen import fold_conv_bn

        fused = fold_conv_bn(self.conv1, self.bn2)
        if fused is not None:
            self.conv1, self.bn2 = fused, nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class PreActResNet(Classifier):
    """Pre-activation ResNet for small images: stages of ``widths`` channels, ``blocks`` each;
    the features are the globally pooled last stage (``widths[-1]``-d)."""

    def __init__(self, num_classes: int, in_channels: int = 1, widths=(16, 32, 64), blocks=(1, 1, 1)):
        super().__init__()
        layers, cin = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)], widths[0]
        for stage, (w, n) in enumerate(zip(widths, blocks)):
            for i in range(n):
                layers.append(PreActBlock(cin, w, 2 if (i == 0 and stage > 0) else 1))
                cin = w
        self.body = nn.Sequential(*layers, nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)
        self.feature_dim, self.num_classes = cin, num_classes

    def features(self, x):
        return self.body(x)

    def head(self, f):
        return self.fc(f)


class InceptionV3(Classifier):
    """torchvision Inception-v3 without the auxiliary head; 2,048-d pooled features."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        net = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=False)
        if in_channels != 3:
            net.Conv2d_1a_3x3 = tvm.inception.BasicConv2d(in_channels, 32, kernel_size=3, stride=2)
        net.fc = nn.Identity()
        self.body = net
        self.fc = nn.Linear(2048, num_classes)
        self.feature_dim, self.num_classes = 2048, num_classes

    def features(self, x):
        return self.body(x)

    def head(self, f):
        return self.fc(f)


@register_model("preresnet8", "pre-activation ResNet-8 (16/32/64 channels), default evaluation model at 28-32 px (64-d features)")
def preresnet8(num_classes, in_channels=1, image_size=28):
    check_size("preresnet8", image_size, 8)
    return PreActResNet(num_classes, in_channels, blocks=(1, 1, 1))


@register_model("preresnet20", "pre-activation ResNet-20 (He et al. 2016, CIFAR layout), a deeper evaluation model at 28-32 px")
def preresnet20(num_classes, in_channels=1, image_size=28):
    check_size("preresnet20", image_size, 8)
    return PreActResNet(num_classes, in_channels, blocks=(3, 3, 3))


@register_model("inception-v3", "torchvision Inception-v3 (PPA's and MIDRE's evaluation model), default at 224 px")
def inception_v3(num_classes, in_channels=3, image_size=224):
    check_size("inception-v3", image_size, 75)
    return InceptionV3(num_classes, in_channels)
