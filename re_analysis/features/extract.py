"""Penultimate features of any classifier with a ``features(x)`` method."""

from __future__ import annotations

import torch

from ..errors import ReAnalysisError
from ..training import autocast, normalize


@torch.no_grad()
def extract_features(model, images, batch_size: int = 256, device=None) -> torch.Tensor:
    """Penultimate features (N, D) as CPU float32.

    ``images``: uint8 (N, C, H, W), float in [0, 1], or float already normalised to
    [-1, 1] (reconstructions). A float tensor with negative values is taken as normalised;
    otherwise it is mapped from [0, 1].
    """
    if not hasattr(model, "features"):
        raise ReAnalysisError("extract_features needs a model with a features(x) method "
                              "(every re_analysis classifier has one; wrap yours to expose its penultimate layer)")
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise ReAnalysisError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    device = torch.device(device) if device else next(model.parameters()).device
    already = images.dtype != torch.uint8 and bool((images < 0).any())
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        x = x.float() if already else normalize(x)
        with autocast(device):
            out.append(model.features(x).float().cpu())
    model.train(was)
    return torch.cat(out)
