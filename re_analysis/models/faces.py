"""IR-152 and FaceNet64 (IR-50) face classifiers at 64 px.

The improved-residual (IR) backbone of face.evoLVe, as used for the MI literature's 64 px
targets (IR152) and evaluation model (FaceNet64) since GMI (Zhang et al., CVPR 2020):
bottleneck-IR units (BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN, plus a shortcut),
stages of 64/128/256/512 channels, and an output layer BN2d -> dropout -> linear(512*4*4,
512) -> BN1d giving 512-d features at 64 px. Written here because torchvision has no IR
backbone; initialised randomly (nothing is downloaded).
"""

from __future__ import annotations

from torch import nn

from .registry import Classifier, flat_dim, register_model
from .small import check_size

STAGES = {50: (3, 4, 14, 3), 152: (3, 8, 36, 3)}


class BottleneckIR(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cin == cout:
            self.shortcut = nn.MaxPool2d(1, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.residual = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class IRNet(Classifier):
    """IR-``depth`` backbone with a 512-d embedding and a linear classifier."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, image_size: int = 64):
        super().__init__()
        layers = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)]
        cin = 64
        for cout, n in zip((64, 128, 256, 512), STAGES[depth]):
            for i in range(n):
                layers.append(BottleneckIR(cin, cout, 2 if i == 0 else 1))
                cin = cout
        self.body = nn.Sequential(*layers)
        dim = flat_dim(self.body, in_channels, image_size)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(), nn.Flatten(),
                                          nn.Linear(dim, 512), nn.BatchNorm1d(512))
        self.fc = nn.Linear(512, num_classes)
        self.feature_dim, self.num_classes = 512, num_classes

    def features(self, x):
        return self.output_layer(self.body(x))

    def head(self, f):
        return self.fc(f)


@register_model("ir152", "IR-152 face classifier at 64 px (GMI/KEDMI target), 512-d features")
def ir152(num_classes, in_channels=3, image_size=64):
    check_size("ir152", image_size, 32)
    return IRNet(152, num_classes, in_channels, image_size)


@register_model("facenet64", "FaceNet64 (IR-50 backbone) at 64 px, the MI literature's face evaluation model")
def facenet64(num_classes, in_channels=3, image_size=64):
    check_size("facenet64", image_size, 32)
    return IRNet(50, num_classes, in_channels, image_size)
