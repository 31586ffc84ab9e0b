"""GAN generators and discriminators for the attackers' priors, at any side length
(28, 32, 64, 224 ...).

DCGAN-style generator as in GMI (Zhang et al., CVPR 2020): linear -> (BN, ReLU) ->
transposed convs that double the side each step, tanh output in [-1, 1] (the normalised
image space of this suite). The discriminator mirrors it with strided convs and
InstanceNorm (no BatchNorm: the WGAN-GP gradient penalty is per sample) and LeakyReLU.
Its ``out_dim`` is 1 for WGAN-GP (GMI), the number of target classes for KEDMI's
inversion-specific discriminator, and the number of pseudo-classes for PLG-MI's projection
discriminator (which adds a class embedding term).
"""

from __future__ import annotations

import torch
from torch import nn


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """(start side, number of x2 upsamplings): 28 -> (7, 2), 64 -> (4, 4), 224 -> (7, 5)."""
    side, n = image_size, 0
    while side % 2 == 0 and side > 7:
        side //= 2
        n += 1
    if n == 0:
        raise ValueError(f"image size {image_size} cannot be reached by doubling; use an even size such as 28, 32 or 64")
    return side, n


class Generator(nn.Module):
    """z (N, z_dim) -> images (N, C, S, S) in [-1, 1]; optional class conditioning (PLG-MI)."""

    def __init__(self, image_size: int = 28, channels: int = 1, z_dim: int = 100, dim: int = 64,
                 num_classes: int = 0):
        super().__init__()
        start, n = upsampling_plan(image_size)
        self.z_dim, self.image_size, self.channels, self.num_classes = z_dim, image_size, channels, num_classes
        width = dim * 2 ** (n - 1)
        self.start, self.width = start, width
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        self.fc = nn.Sequential(nn.Linear(z_dim, width * start * start, bias=False),
                                nn.BatchNorm1d(width * start * start), nn.ReLU())
        blocks = []
        for i in range(n - 1):
            blocks += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        blocks += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("this generator is class-conditional: pass labels y")
            z = z * self.embed(y)  # multiplicative conditioning keeps z's scale
        h = self.fc(z).view(-1, self.width, self.start, self.start)
        return self.net(h)


class Discriminator(nn.Module):
    """images -> ``out_dim`` scores; ``features(x)`` is the flattened penultimate layer.

    ``projection_classes > 0`` adds the projection term ``<embed(y), features>`` of
    Miyato & Koyama (ICLR 2018), which PLG-MI's conditional discriminator uses.
    """

    def __init__(self, image_size: int = 28, channels: int = 1, dim: int = 64, out_dim: int = 1,
                 projection_classes: int = 0):
        super().__init__()
        start, n = upsampling_plan(image_size)
        layers = [nn.Conv2d(channels, dim, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = dim
        for _ in range(n - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1), nn.InstanceNorm2d(width * 2, affine=True), nn.LeakyReLU(0.2)]
            width *= 2
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        self.feature_dim = width * start * start
        self.out = nn.Linear(self.feature_dim, out_dim)
        self.embed = nn.Embedding(projection_classes, self.feature_dim) if projection_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(x)
        out = self.out(f)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y")
            out = out + (self.embed(y) * f).sum(1, keepdim=True)
        return out
