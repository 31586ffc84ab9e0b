"""The one input convention of every classifier, GAN and metric in the suite.

Models live in normalised space: ``Normalize(0.5, 0.5)``, pixel values in [-1, 1].

- **uint8** tensors are pixels in [0, 255] and are normalised;
- **float** tensors are already normalised to [-1, 1] (reconstructions, erased images,
  GAN samples): they are used as they are.

A float image in [0, 1] is therefore *not* accepted silently as pixels: convert it with
:func:`normalize` (or to uint8) first. Guessing from the presence of negative values
(what earlier versions did) reads a bright reconstruction as pixels.

Example:
    >>> import torch
    >>> from re_analysis.models.inputs import as_model_input
    >>> as_model_input(torch.tensor([0, 255], dtype=torch.uint8)).tolist()
    [-1.0, 1.0]
    >>> as_model_input(torch.tensor([0.25])).tolist()
    [0.25]
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ReAnalysisError

__all__ = ["as_model_input", "normalize", "predict_logits", "autocast", "resolve_device", "channels_last"]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Pixels (uint8 in [0, 255] or float in [0, 1]) -> float in [-1, 1] (``Normalize(0.5, 0.5)``)."""
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return x.sub(0.5).div(0.5)


def as_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> normalised float; float (already normalised) -> float32 unchanged."""
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        return normalize(images)
    if not images.is_floating_point():
        raise ReAnalysisError(f"images must be uint8 pixels or normalised floats in [-1, 1], got dtype {images.dtype}")
    return images.float()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ReAnalysisError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op on CPU."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")


def channels_last(*items):
    """Modules and 4-D tensors in the NHWC layout (others unchanged), returned in order.

    Same arithmetic, faster convolutions: cuDNN with bf16, and oneDNN on one CPU thread
    too (1.3-1.7x for a classifier's training step, 1.0-1.2x for GMI's latent search:
    ``benchmarks/channels_last.py``). Modules are converted in place.
    """
    out = [x.contiguous(memory_format=torch.channels_last) if isinstance(x, torch.Tensor) and x.dim() == 4
           else x.to(memory_format=torch.channels_last) if isinstance(x, nn.Module) else x for x in items]
    return out[0] if len(out) == 1 else out


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) on images in the suite's convention (see module
    doc: uint8 pixels or normalised floats). Returns CPU float32."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = as_model_input(images[i:i + batch_size]).to(device)
        with autocast(device):
            out.append(model(x).float().cpu())
    model.train(was)
    return torch.cat(out) if out else torch.empty(0)
