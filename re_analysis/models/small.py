"""Small classifiers for 28 px data and torchvision backbones (VGG16, ResNet-18)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from ..errors import ReAnalysisError
from .registry import Classifier, flat_dim, register_model


class CNN28(Classifier):
    """Two conv blocks (32, 64 channels, BN, ReLU, max-pool) and a 128-d penultimate layer."""

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.neck = nn.Sequential(nn.Linear(flat_dim(self.body, in_channels, image_size), 128), nn.ReLU())
        self.fc = nn.Linear(128, num_classes)
        self.feature_dim, self.num_classes = 128, num_classes

    def features(self, x):
        return self.neck(self.body(x))

    def head(self, f):
        return self.fc(f)


class LeNet28(Classifier):
    """LeNet-5 style evaluation model: 5x5 convs, tanh-free ReLU, dropout, 256-d features.

    A different architecture from the target, as the MI protocol requires of the
    evaluation model.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25),
        )
        self.neck = nn.Sequential(nn.Linear(flat_dim(self.body, in_channels, image_size), 256), nn.ReLU())
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(256, num_classes)
        self.feature_dim, self.num_classes = 256, num_classes

    def features(self, x):
        return self.neck(self.body(x))

    def head(self, f):
        return self.fc(self.drop(f))


class VGG16(Classifier):
    """VGG16-BN body (torchvision, random init) with the GMI head: flatten -> BN1d -> linear.

    At 64 px the body gives 512 x 2 x 2 = 2,048 features (GMI, Zhang et al. CVPR 2020).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 64):
        super().__init__()
        body = tvm.vgg16_bn(weights=None).features
        if in_channels != 3:
            body[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        self.body = body
        dim = flat_dim(self.body, in_channels, image_size)
        self.bn = nn.BatchNorm1d(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.feature_dim, self.num_classes = dim, num_classes

    def features(self, x):
        return self.bn(self.body(x).flatten(1))

    def head(self, f):
        return self.fc(f)


class ResNet18(Classifier):
    """torchvision ResNet-18 (random init; MIDRE's target at 224 px), 512-d features."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 224):
        super().__init__()
        net = tvm.resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        net.fc = nn.Identity()
        self.body = net
        self.fc = nn.Linear(512, num_classes)
        self.feature_dim, self.num_classes = 512, num_classes

    def features(self, x):
        return self.body(x)

    def head(self, f):
        return self.fc(f)


def check_size(name: str, image_size: int, minimum: int):
    if image_size < minimum:
        raise ReAnalysisError(f"{name} needs images of at least {minimum} px, got {image_size}; pass --image-size {minimum} or choose cnn28")


@register_model("cnn28", "small CNN target for 28 px images (128-d features)")
def cnn28(num_classes, in_channels=1, image_size=28):
    return CNN28(num_classes, in_channels, image_size)


@register_model("lenet28", "LeNet-5 style evaluation model for 28 px images (256-d features)")
def lenet28(num_classes, in_channels=1, image_size=28):
    return LeNet28(num_classes, in_channels, image_size)


@register_model("vgg16", "VGG16-BN with GMI's head, the MI literature's 64 px target")
def vgg16(num_classes, in_channels=3, image_size=64):
    check_size("vgg16", image_size, 32)
    return VGG16(num_classes, in_channels, image_size)


@register_model("resnet18", "torchvision ResNet-18, MIDRE's 224 px target")
def resnet18(num_classes, in_channels=3, image_size=224):
    check_size("resnet18", image_size, 32)
    return ResNet18(num_classes, in_channels, image_size)


class MLP28(Classifier):
    """Two-hidden-layer MLP (512, 128): a structurally different model, used as one of
    LOMMA's augmented (distilled) models at 28 px."""

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 512), nn.ReLU(),
                                  nn.Linear(512, 128), nn.ReLU())
        self.fc = nn.Linear(128, num_classes)
        self.feature_dim, self.num_classes = 128, num_classes

    def features(self, x):
        return self.body(x)

    def head(self, f):
        return self.fc(f)


@register_model("cnn28s", "narrow CNN (16/32 channels) for 28 px, a LOMMA augmented model")
def cnn28s(num_classes, in_channels=1, image_size=28):
    return CNN28(num_classes, in_channels, image_size, width=16)


@register_model("mlp28", "MLP for 28 px images (128-d features), a LOMMA augmented model")
def mlp28(num_classes, in_channels=1, image_size=28):
    return MLP28(num_classes, in_channels, image_size)
