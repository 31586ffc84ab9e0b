"""The standard augmentation every target (No Defense included) and the evaluation model
train with, declared per dataset.

MIDRE (Tran et al., TMLR 2025) forks the PPA pipeline (Struppek et al., ICML 2022), whose
targets all train with ``RandomResizedCrop(scale 0.85-1, ratio 1) -> ColorJitter(0.2, 0.2,
0.1, 0.1) -> RandomHorizontalFlip(0.5)`` on pixels in [0, 1], then ``Normalize(0.5, 0.5)``,
then (for MIDRE) Random Erasing. Comparing "RE vs none" without that augmentation measures
RE plus generic augmentation. Recipes:

- ``"ppa"``: the MIDRE/PPA recipe above (faces, dogs: colour images);
- ``"shift"``: a random shift of up to ``size / 14`` pixels (2 px at 28 and 32 px) with
  edge-replicated borders (digits, glyphs, Fashion-MNIST: small grey-level images);
- ``"none"``: no augmentation (the ``none-noaug`` ablation).

Every recipe flips horizontally only where the dataset declares that a flip keeps labels
(``register_dataset(hflip=...)``): a mirrored 2 is not a 2. A dataset may declare its recipe
at registration (``register_dataset(..., augmentation="shift")``); otherwise colour images
get ``"ppa"`` and one-channel images ``"shift"``.

Parameters are drawn **per image** (kornia; ``torchvision.transforms.v2`` called on a batch
draws one set of parameters for the whole batch) and seeded from an integer, so a resumed
training draws exactly what an uninterrupted one would.

Example:
    >>> import torch
    >>> from re_analysis.augment import StandardAugmentation
    >>> aug = StandardAugmentation("shift", image_size=28, channels=1, hflip=False)
    >>> aug.recipe["name"], aug.recipe["max_shift_px"]
    ('shift', 2)
    >>> x = torch.rand(8, 1, 28, 28)
    >>> torch.equal(aug(x, seed=3), aug(x, seed=3))
    True
"""

from __future__ import annotations

from typing import Any

import torch

from .data.registry import RECIPES, augmentation_recipe
from .errors import ReAnalysisError

__all__ = ["RECIPES", "StandardAugmentation", "standard_augmentation", "recipe_name_for"]

PPA_CROP_SCALE = (0.85, 1.0)
PPA_JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.1, "hue": 0.1}


def recipe_name_for(dataset: str, channels: int) -> str:
    """The recipe a dataset declared at registration, else ``"ppa"`` for colour images and
    ``"shift"`` for one-channel ones (:func:`re_analysis.data.registry.augmentation_recipe`)."""
    return augmentation_recipe(dataset, channels)


class StandardAugmentation:
    """A per-image, seeded augmentation of pixel batches in [0, 1] (before ``Normalize``).

    Args:
        recipe: ``"ppa"``, ``"shift"`` or ``"none"`` (see the module doc).
        image_size: side length of the (square) images.
        channels: 1 (grey) or 3 (colour); on grey images the jitter leaves out saturation
            and hue, which do not exist there.
        hflip: whether a horizontal flip keeps labels (the dataset's declaration).
    """

    def __init__(self, recipe: str, image_size: int, channels: int, hflip: bool):
        if recipe not in RECIPES:
            raise ReAnalysisError(f"augmentation recipe must be one of {', '.join(RECIPES)}, got {recipe!r}; "
                                  "declare one of them with register_dataset(..., augmentation=...)")
        if not isinstance(image_size, int) or image_size < 8:
            raise ReAnalysisError(f"augmentation image_size must be an integer >= 8, got {image_size!r}")
        if channels not in (1, 3):
            raise ReAnalysisError(f"augmentation works on 1- or 3-channel images, got {channels} channels")
        self.name, self.image_size, self.channels, self.hflip = recipe, image_size, channels, bool(hflip)
        self.pipeline = self.build()

    @property
    def recipe(self) -> dict[str, Any]:
        """The declared recipe, as recorded in a training run's ``metrics.json`` and config key."""
        out: dict[str, Any] = {"name": self.name}
        if self.name == "ppa":
            jitter = dict(PPA_JITTER) if self.channels == 3 else {"brightness": 0.2, "contrast": 0.2}
            out.update({"random_resized_crop": {"scale": list(PPA_CROP_SCALE), "ratio": [1.0, 1.0]},
                        "color_jitter": jitter})
        elif self.name == "shift":
            out.update({"max_shift_px": self.max_shift, "padding_mode": "replicate"})
        if self.name != "none":
            out.update({"hflip": self.hflip, "per_image": True})
        return out

    @property
    def max_shift(self) -> int:
        return max(1, round(self.image_size / 14))

    def build(self):
        """The kornia pipeline (None for ``"none"``)."""
        if self.name == "none":
            return None
        import kornia.augmentation as K

        size = (self.image_size, self.image_size)
        if self.name == "ppa":
            sat, hue = (PPA_JITTER["saturation"], PPA_JITTER["hue"]) if self.channels == 3 else (0.0, 0.0)
            steps = [K.RandomResizedCrop(size, scale=PPA_CROP_SCALE, ratio=(1.0, 1.0)),
                     K.ColorJitter(PPA_JITTER["brightness"], PPA_JITTER["contrast"], sat, hue, p=1.0)]
        else:
            steps = [K.RandomCrop(size, padding=self.max_shift, padding_mode="replicate")]
        if self.hflip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        return K.ImageSequential(*steps)

    def __call__(self, pixels: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment float pixels (N, C, H, W) in [0, 1]; the same ``seed`` gives the same draw."""
        if pixels.ndim != 4 or not pixels.is_floating_point():
            raise ReAnalysisError(f"augmentation expects float pixel batches (N, C, H, W) in [0, 1], "
                                  f"got {pixels.dtype} of shape {tuple(pixels.shape)}")
        if self.pipeline is None:
            return pixels
        # kornia draws from the global generator: fork it so the draw depends on `seed` only
        # and leaves the training loop's own random stream (dropout, noise) untouched.
        devices = [pixels.device] if pixels.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.pipeline(pixels).clamp(0, 1)

    def __repr__(self) -> str:
        return f"StandardAugmentation({self.recipe})"


def standard_augmentation(dataset: str, splits, enabled: bool = True) -> StandardAugmentation:
    """The standard augmentation of ``dataset`` for the loaded ``splits`` (channels, size,
    whether a flip keeps labels); ``enabled=False`` gives the ``"none"`` recipe."""
    name = recipe_name_for(dataset, splits.channels) if enabled else "none"
    return StandardAugmentation(name, splits.image_size, splits.channels, splits.hflip_preserves_labels)
