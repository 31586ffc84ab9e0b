"""GAN generators and discriminators for the attackers' priors, at any side length
(28, 32, 64, 224 ...).

- :class:`Generator`: DCGAN-style as in GMI (Zhang et al., CVPR 2020): linear -> (BN,
  ReLU) -> transposed convs that double the side each step, tanh output in [-1, 1] (the
  normalised image space of this suite). With ``num_classes`` every BatchNorm becomes a
  class-conditional BatchNorm (per-class gain and bias), PLG-MI's conditioning (Yuan et
  al., AAAI 2023; official: a conditional-BN ResNet generator).
- :class:`Discriminator`: strided convs with InstanceNorm (no BatchNorm: the WGAN-GP
  gradient penalty is per sample) and LeakyReLU; ``out_dim`` 1 for GMI's WGAN-GP critic,
  the number of target classes for KEDMI's inversion-specific discriminator, which also
  has KEDMI's minibatch-discrimination layer (Salimans et al., 2016; Chen et al., ICCV 2021).
- :class:`SNProjectionDiscriminator`: spectral-norm convs, global sum pooling and the
  projection term of Miyato & Koyama (ICLR 2018), PLG-MI's discriminator.

Example:
    >>> import torch
    >>> g = Generator(28, 1, z_dim=8, dim=8, num_classes=5)
    >>> g.eval()(torch.randn(2, 8), torch.tensor([0, 4])).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """(start side, number of x2 upsamplings): 28 -> (7, 2), 64 -> (4, 4), 224 -> (7, 5)."""
    side, n = image_size, 0
    while side % 2 == 0 and side > 7:
        side //= 2
        n += 1
    if n == 0:
        raise ValueError(f"image size {image_size} cannot be reached by doubling; use an even size such as 28, 32 or 64")
    return side, n


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own affine, followed by a per-class gain and bias
    (categorical conditional BN, as in PLG-MI's generator). Gains start at 1, biases at 0."""

    def __init__(self, num_features: int, num_classes: int, dims: int = 2):
        super().__init__()
        self.bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(num_features, affine=False)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shape = (len(x), -1) + (1,) * (x.dim() - 2)
        return self.bn(x) * self.gain(y).view(shape) + self.bias(y).view(shape)


class Generator(nn.Module):
    """z (N, z_dim) -> images (N, C, S, S) in [-1, 1]; class-conditional when ``num_classes > 0``."""

    def __init__(self, image_size: int = 28, channels: int = 1, z_dim: int = 100, dim: int = 64,
                 num_classes: int = 0):
        super().__init__()
        start, n = upsampling_plan(image_size)
        self.z_dim, self.image_size, self.channels, self.num_classes = z_dim, image_size, channels, num_classes
        width = dim * 2 ** (n - 1)
        self.start, self.width = start, width
        self.fc = nn.Linear(z_dim, width * start * start, bias=False)
        self.norms = nn.ModuleList([self._norm(width * start * start, 1)])
        self.ups = nn.ModuleList()
        for _ in range(n - 1):
            self.ups.append(nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False))
            self.norms.append(self._norm(width // 2, 2))
            width //= 2
        self.out = nn.ConvTranspose2d(width, channels, 4, 2, 1)

    def _norm(self, features: int, dims: int) -> nn.Module:
        if self.num_classes:
            return ConditionalBatchNorm(features, self.num_classes, dims)
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(features)

    def _bn(self, i: int, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.relu(self.norms[i](h, y) if self.num_classes else self.norms[i](h))

    def fold_batchnorm(self) -> None:
        """Fold each eval-mode BatchNorm into the layer before it (the linear layer, the
        transposed convolutions), in place: the same function, fewer operations (a frozen copy's
        lever, :func:`re_analysis.models.frozen.frozen`). Class-conditional norms stay."""
        if self.num_classes:
            return
        from ..models.frozen import fold_conv_bn

        for i, layer in enumerate([self.fc, *self.ups]):
            fused = fold_conv_bn(layer, self.norms[i])
            if fused is None:
                continue
            if i == 0:
                self.fc = fused
            else:
                self.ups[i - 1] = fused
            self.norms[i] = nn.Identity()

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            raise ValueError("this generator is class-conditional: pass labels y")
        h = self._bn(0, self.fc(z), y).view(-1, self.width, self.start, self.start)
        for i, up in enumerate(self.ups, start=1):
            h = self._bn(i, up(h), y)
        return torch.tanh(self.out(h))


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al., NeurIPS 2016), KEDMI's discriminator layer:
    appends to each row, per kernel, the sum over the other rows of exp(-L1 distance)."""

    def __init__(self, in_features: int, out_features: int = 64, kernel_dims: int = 50):
        super().__init__()
        self.out_features, self.kernel_dims = out_features, kernel_dims
        self.T = nn.Parameter(torch.randn(in_features, out_features * kernel_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x @ self.T).view(-1, self.out_features, self.kernel_dims).transpose(0, 1)  # (B, N, C)
        dist = torch.cdist(m, m, p=1)  # (B, N, N) L1 distances per kernel
        other = torch.exp(-dist).sum(2) - 1  # minus each row's distance to itself
        return torch.cat([x, other.t()], 1)


class Discriminator(nn.Module):
    """images -> ``out_dim`` scores; ``features(x)`` is the flattened penultimate layer
    (before minibatch discrimination, which KEDMI's generator matches in mean)."""

    def __init__(self, image_size: int = 28, channels: int = 1, dim: int = 64, out_dim: int = 1,
                 minibatch_features: int = 0):
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
        self.mbd = MinibatchDiscrimination(self.feature_dim, minibatch_features) if minibatch_features else None
        self.out = nn.Linear(self.feature_dim + minibatch_features, out_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(self.mbd(f) if self.mbd is not None else f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SNProjectionDiscriminator(nn.Module):
    """Spectral-norm projection discriminator (Miyato & Koyama, ICLR 2018), PLG-MI's:
    ``D(x, y) = w . h(x) + <embed(y), h(x)>`` with ``h`` the globally sum-pooled ReLU
    features; every weight (convs, linear, class embedding) is spectrally normalised.

    A plain strided-conv body (one 4x4 stride-2 conv per level, as the WGAN critic) stands
    in for the official SN-ResNet blocks: about 6x cheaper on a CPU at 28 px.
    """

    def __init__(self, image_size: int = 28, channels: int = 1, dim: int = 64, num_classes: int = 1):
        super().__init__()
        _, n = upsampling_plan(image_size)
        layers, width = [], channels
        for i in range(n):
            out = dim * 2 ** i
            layers += [spectral_norm(nn.Conv2d(width, out, 4, 2, 1)), nn.ReLU()]
            width = out
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.out = spectral_norm(nn.Linear(width, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, width))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.out(h)
        if y is not None:
            out = out + (self.embed(y) * h).sum(1, keepdim=True)
        return out
