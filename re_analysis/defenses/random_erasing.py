"""Random Erasing as a model inversion defense (MIDRE).

Tran, Nguyen et al., "Random Erasing vs. Model Inversion: A Promising Defense or a False
Hope?", TMLR 2025 (arXiv 2409.01062); Random Erasing itself: Zhong et al., AAAI 2020.
Official MIDRE configuration: ``p=1.0``, ``scale=(0.1, 0.4)`` (also ``(0.1, 0.8)``),
``ratio=(1, 1)``, ``value=(0.485, 0.456, 0.406)``, applied in training only, after
``Normalize(0.5, 0.5)`` — so the fill lives in normalised space: 0.485 there is pixel
value 0.74, a light grey, not the ImageNet mean.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import ReAnalysisError
from .base import Defense, register_defense

MIDRE_FILL = (0.485, 0.456, 0.406)
LOCATIONS = ("random", "fixed")


class RandomErasing:
    """Erase one rectangle per image, with **each image of a batch getting its own box**.

    Box sampling follows ``torchvision.transforms.v2.RandomErasing`` (area fraction
    uniform in ``scale``, log aspect ratio uniform in ``log(ratio)``, up to 10 attempts for
    a box that fits, position uniform), but vectorised over the batch: torchvision, called
    on a batch tensor, erases the same box in every image, which is not the augmentation
    the MIDRE paper trains with. Written by hand because no library samples per-image boxes
    on device.

    Args:
        scale: range of the erased area as a fraction of the image.
        ratio: range of the box aspect ratio (height / width); ``(1, 1)`` is square.
        value: fill, in the space the input lives in (normalised, for MIDRE): a number, one
            number per channel, or ``"random"`` (standard normal noise per pixel). The
            default is MIDRE's ``(0.485, 0.456, 0.406)``; on a one-channel image its mean,
            0.449, is used.
        p: probability that an image is erased (MIDRE: 1.0, the model never sees a whole
            image: the paper's "Partial Erasure" property; ``p < 1`` ablates it).
        location: ``"random"`` (uniform position per image) or ``"fixed"`` (every box
            centred in the image: the paper's "Random Location" ablation; with
            ``scale=(a, a)`` and ``ratio=(1, 1)`` every image loses the same box).

    Example:
        >>> import torch
        >>> from re_analysis import RandomErasing
        >>> x = torch.zeros(8, 1, 28, 28)
        >>> out = RandomErasing(value=1.0)(x, generator=torch.Generator().manual_seed(0))
        >>> bool(((out == 1).flatten(1).float().mean(1) > 0.05).all())
        True
    """

    def __init__(self, scale: Sequence[float] = (0.1, 0.4), ratio: Sequence[float] = (1.0, 1.0),
                 value: float | Sequence[float] | str = MIDRE_FILL, p: float = 1.0,
                 location: str = "random"):
        scale = tuple(float(s) for s in scale)
        ratio = tuple(float(r) for r in ratio)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] < 1:
            raise ReAnalysisError(f"RandomErasing scale must be (lo, hi) with 0 < lo <= hi < 1, got {scale}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ReAnalysisError(f"RandomErasing ratio must be (lo, hi) with 0 < lo <= hi, got {ratio}")
        if not 0 <= float(p) <= 1:
            raise ReAnalysisError(f"RandomErasing p must be a probability in [0, 1], got {p}")
        if location not in LOCATIONS:
            raise ReAnalysisError(f"RandomErasing location must be one of {LOCATIONS}, got {location!r}")
        if isinstance(value, str):
            if value != "random":
                raise ReAnalysisError(f"RandomErasing value must be a number, a per-channel list or 'random', got {value!r}")
        else:
            value = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
            if not value or any(math.isnan(v) for v in value):
                raise ReAnalysisError(f"RandomErasing value must hold finite numbers, got {value}")
        self.scale, self.ratio, self.value, self.p, self.location = scale, ratio, value, float(p), location

    def __repr__(self) -> str:
        return (f"RandomErasing(scale={self.scale}, ratio={self.ratio}, value={self.value}, "
                f"p={self.p}, location={self.location!r})")

    def sample_boxes(self, n: int, height: int, width: int, device=None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Boxes as an (n, 4) long tensor of ``(top, left, h, w)``; ``h == 0`` means not erased."""
        attempts = 10
        kw = dict(device=device, generator=generator)
        area = height * width
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, attempts, **kw))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, attempts, **kw))
        h = torch.sqrt(target * aspect).round().long()
        w = torch.sqrt(target / aspect).round().long()
        ok = (h < height) & (w < width) & (h > 0) & (w > 0)
        first = ok.float().argmax(dim=1, keepdim=True)
        h = h.gather(1, first).squeeze(1)
        w = w.gather(1, first).squeeze(1)
        erase = ok.any(dim=1) & (torch.rand(n, **kw) < self.p)
        if self.location == "random":
            top = (torch.rand(n, **kw) * (height - h + 1)).floor().long()
            left = (torch.rand(n, **kw) * (width - w + 1)).floor().long()
        else:
            top, left = (height - h) // 2, (width - w) // 2
        zero = torch.zeros_like(h)
        return torch.stack([torch.where(erase, top, zero), torch.where(erase, left, zero),
                            torch.where(erase, h, zero), torch.where(erase, w, zero)], dim=1)

    def masks(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Boolean (n, 1, H, W) masks of the boxes."""
        rows = torch.arange(height, device=boxes.device).view(1, height, 1)
        cols = torch.arange(width, device=boxes.device).view(1, 1, width)
        top, left, h, w = (boxes[:, k].view(-1, 1, 1) for k in range(4))
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        return inside.unsqueeze(1)

    def fill(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        channels = x.shape[-3]
        if self.value == "random":
            return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        v = torch.tensor(self.value, device=x.device, dtype=x.dtype)
        if len(v) not in (1, channels):
            if channels == 1:
                v = v.mean().view(1)
            else:
                raise ReAnalysisError(f"RandomErasing value has {len(v)} entries but images have {channels} channels; "
                                      "pass one value or one per channel")
        return v.view(-1, 1, 1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Erase ``x`` of shape (N, C, H, W) (or one image (C, H, W)); returns a new tensor."""
        single = x.ndim == 3
        if single:
            x = x.unsqueeze(0)
        if x.ndim != 4:
            raise ReAnalysisError(f"RandomErasing expects (N, C, H, W) or (C, H, W) tensors, got shape {tuple(x.shape)}")
        n, _, height, width = x.shape
        boxes = self.sample_boxes(n, height, width, device=x.device, generator=generator)
        out = torch.where(self.masks(boxes, height, width), self.fill(x, generator), x)
        return out[0] if single else out


@register_defense("random-erasing", "MIDRE: per-image Random Erasing of training inputs (TMLR 2025)")
class RandomErasingDefense(Defense):
    """Train on Random-Erased inputs with plain cross-entropy (MIDRE, TMLR 2025).

    Parameters are those of :class:`RandomErasing`; defaults are the official MIDRE
    configuration (``p=1``, ``scale=(0.1, 0.4)``, square boxes, fill 0.485/0.456/0.406 in
    normalised space).
    """

    name = "random-erasing"

    def __init__(self, scale=(0.1, 0.4), ratio=(1.0, 1.0), value=MIDRE_FILL, p: float = 1.0,
                 location: str = "random"):
        self.eraser = RandomErasing(scale=scale, ratio=ratio, value=value, p=p, location=location)
        e = self.eraser
        self.params = {"scale": list(e.scale), "ratio": list(e.ratio),
                       "value": e.value if isinstance(e.value, str) else list(e.value),
                       "p": e.p, "location": e.location}

    def transform_batch(self, x, y, generator=None):
        return self.eraser(x, generator=generator)
