"""Penultimate features of any classifier with a ``features(x)`` method."""

from __future__ import annotations

import torch

from ..errors import ReAnalysisError
from ..models.inputs import as_model_input, autocast


@torch.no_grad()
def extract_features(model, images, batch_size: int = 256, device=None) -> torch.Tensor:
    """Penultimate features (N, D) as CPU float32.

    ``images`` follow the suite's input convention (:mod:`re_analysis.models.inputs`):
    uint8 pixels, or floats already normalised to [-1, 1] (reconstructions, erased images).

    Example:
        >>> import torch
        >>> from re_analysis.models import create_model
        >>> m = create_model("cnn28", 5, 1, 28)
        >>> extract_features(m, torch.zeros(3, 1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([3, 128])
    """
    if not hasattr(model, "features"):
        raise ReAnalysisError("extract_features needs a model with a features(x) method "
                              "(every re_analysis classifier has one; wrap yours to expose its penultimate layer)")
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise ReAnalysisError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    device = torch.device(device) if device else next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = as_model_input(images[i:i + batch_size]).to(device)
        with autocast(device):
            out.append(model.features(x).float().cpu())
    model.train(was)
    return torch.cat(out)
