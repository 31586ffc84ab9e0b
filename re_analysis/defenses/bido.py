"""BiDO — "Bilateral Dependency Optimization: Defending Against Model-inversion Attacks",
Peng et al., KDD 2022 (HSIC variant).

Loss = CE + lambda_x * sum_l HSIC(x, z_l) - lambda_y * sum_l HSIC(y, z_l) over hidden
representations z_l: the outputs of the downsampling blocks and the penultimate features,
as the paper does for its VGG targets. Gaussian kernels of width ``sigma * sqrt(dim)``
(official code: sigma = 5) for inputs and hidden layers, a linear kernel on one-hot labels,
normalised HSIC. Defaults (lambda_x, lambda_y) = (0.05, 0.5), the paper's CelebA setting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReAnalysisError
from .base import Defense, register_defense


def gaussian_kernel(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-|xi - xj|^2 / (2 s^2)) with s = sigma * sqrt(dim) (BiDO's scaling)."""
    x = x.flatten(1)
    s = sigma * math.sqrt(x.shape[1])
    return torch.exp(-torch.cdist(x, x).pow(2) / (2 * s * s))


def hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Biased HSIC estimator (Gretton et al., 2005): tr(K H L H) / (m - 1)^2."""
    m = k.shape[0]
    h = torch.eye(m, device=k.device, dtype=k.dtype) - 1.0 / m
    return torch.trace(k @ h @ l @ h) / (m - 1) ** 2


def normalized_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    return hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l) + 1e-12)


def hidden_modules(model: nn.Module) -> list[nn.Module]:
    """Downsampling blocks of the model's body (max-pools, else stride-2 residual units)."""
    from ..distributed import unwrap

    inner = unwrap(model)
    mods = [m for m in inner.modules() if isinstance(m, nn.MaxPool2d) and m.kernel_size != 1]
    if not mods:
        body = getattr(inner, "body", inner)
        mods = [c for c in body.children() if any(getattr(p, "stride", (1,))[0] == 2 for p in c.modules()
                                                  if isinstance(p, nn.Conv2d))]
    return mods


@register_defense("bido", "BiDO-HSIC: penalise HSIC(input, hidden), reward HSIC(label, hidden) (Peng et al., KDD 2022)")
class BiDODefense(Defense):
    """Bilateral dependency optimisation with HSIC (KDD 2022)."""

    name = "bido"

    def __init__(self, lambda_x: float = 0.05, lambda_y: float = 0.5, sigma: float = 5.0):
        for k, v in (("lambda_x", lambda_x), ("lambda_y", lambda_y), ("sigma", sigma)):
            if not isinstance(v, (int, float)) or v < 0 or (k == "sigma" and v == 0):
                raise ReAnalysisError(f"bido {k} must be a {'positive' if k == 'sigma' else 'non-negative'} number, got {v!r}")
        self.lambda_x, self.lambda_y, self.sigma = float(lambda_x), float(lambda_y), float(sigma)
        self.params = {"lambda_x": self.lambda_x, "lambda_y": self.lambda_y, "sigma": self.sigma}

    def loss(self, model, x, y, epoch):
        acts: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _i, out: acts.append(out)) for m in hidden_modules(model)]
        try:
            from ..distributed import unwrap

            inner = unwrap(model)
            feats = inner.features(x)
            logits = inner.head(feats)
        finally:
            for h in handles:
                h.remove()
        kx = gaussian_kernel(x.float(), self.sigma)
        ky = F.one_hot(y, logits.shape[1]).float()
        ky = ky @ ky.T
        dep_x = dep_y = 0.0
        for z in acts + [feats]:
            kz = gaussian_kernel(z.float(), self.sigma)
            dep_x = dep_x + normalized_hsic(kx, kz)
            dep_y = dep_y + normalized_hsic(ky, kz)
        return F.cross_entropy(logits, y) + self.lambda_x * dep_x - self.lambda_y * dep_y, logits
