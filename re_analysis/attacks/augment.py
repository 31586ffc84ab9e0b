"""Attack-side image augmentations, per image, reproducible, and label-preserving.

Every random transform an attacker applies to generated images lives here: PLG-MI's
(Yuan et al., AAAI 2023) augmentations of fakes in its prior and its attack, and PPA's
(Struppek et al., ICML 2022) transforms of its three stages. They are kornia pipelines
(one random draw per image of a batch, differentiable), wrapped so that

- images stay in the suite's normalised space [-1, 1] (kornia's colour ops expect [0, 1]);
- every draw comes from a seed taken from the caller's ``torch.Generator`` (itself
  seeded by (seed, iteration)), inside ``torch.random.fork_rng``: the same seed gives the
  same transforms, a resumed attack repeats them exactly, and the global RNG is untouched;
- a horizontal flip is included only when the dataset declares that a flip keeps its
  labels (``MISplits.hflip_preserves_labels``): a mirrored 2, 3 or 4 is not a digit.

Example:
    >>> import torch
    >>> aug = plg_augmentation(28, channels=1, hflip=False)
    >>> x = torch.zeros(4, 1, 28, 28)
    >>> g = torch.Generator().manual_seed(0)
    >>> aug(x, g).shape
    torch.Size([4, 1, 28, 28])
    >>> aug.flips
    False
"""

from __future__ import annotations

import torch

__all__ = ["Augmentation", "plg_augmentation", "ppa_optimisation_augmentation", "ppa_selection_augmentation",
           "initial_selection_views", "draw_seed"]


def draw_seed(gen: torch.Generator) -> int:
    """A 62-bit seed drawn from ``gen`` (so transforms follow the caller's seeded stream)."""
    return int(torch.randint(0, 2 ** 62, (1,), generator=gen, device=gen.device).item())


class Augmentation:
    """A kornia pipeline applied per image to images in [-1, 1], seeded by a generator.

    Args:
        ops: kornia augmentation modules, applied in order.
        flips: whether ``ops`` contain a horizontal flip (recorded, checked in tests).
    """

    def __init__(self, *ops, flips: bool):
        import kornia.augmentation as K  # imported where used: kornia is heavy

        self.pipeline = K.ImageSequential(*ops)
        self.flips = flips

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(draw_seed(gen))
            out = self.pipeline(x.float().add(1).div(2))
        return out.mul(2).sub(1).to(x.dtype)

    def __repr__(self) -> str:
        return f"Augmentation({self.pipeline}, flips={self.flips})"


def plg_augmentation(size: int, channels: int, hflip: bool, jitter_p: float = 1.0) -> Augmentation:
    """PLG-MI's augmentation of generated images (official code, ``train_cgan.py`` and
    ``reconstruct.py``): RandomResizedCrop(area 0.8-1, square), ColorJitter(brightness
    0.2, contrast 0.2) on colour data (probability 0.5 in the prior, 1 in the attack),
    RandomHorizontalFlip where it keeps labels, RandomRotation(5 degrees, p 0.5)."""
    import kornia.augmentation as K

    ops = [K.RandomResizedCrop((size, size), scale=(0.8, 1.0), ratio=(1.0, 1.0))]
    if channels == 3:
        ops.append(K.ColorJitter(brightness=0.2, contrast=0.2, p=jitter_p))
    if hflip:
        ops.append(K.RandomHorizontalFlip())
    ops.append(K.RandomRotation(5.0))
    return Augmentation(*ops, flips=hflip)


def ppa_optimisation_augmentation(size: int) -> Augmentation:
    """PPA's transform during optimisation (official configs): RandomResizedCrop(area
    0.9-1, square), no flip. (StyleGAN's centre crop and resize to 224 px have no
    counterpart: our generators already produce the target's size.)"""
    import kornia.augmentation as K

    return Augmentation(K.RandomResizedCrop((size, size), scale=(0.9, 1.0), ratio=(1.0, 1.0)), flips=False)


def ppa_selection_augmentation(size: int, hflip: bool) -> Augmentation:
    """PPA's final-selection transform (``attacks/final_selection.py``): RandomResizedCrop
    (area 0.5-0.9, aspect 0.8-1.2) and a horizontal flip (p 0.5) where it keeps labels."""
    import kornia.augmentation as K

    ops = [K.RandomResizedCrop((size, size), scale=(0.5, 0.9), ratio=(0.8, 1.2))]
    if hflip:
        ops.append(K.RandomHorizontalFlip())
    return Augmentation(*ops, flips=hflip)


def initial_selection_views(x: torch.Tensor, hflip: bool) -> list[torch.Tensor]:
    """PPA's views for the initial selection (``attacks/initial_selection.py``): the image
    and, where a flip keeps labels, its mirror image (confidences are averaged over views)."""
    return [x, torch.flip(x, dims=[-1])] if hflip else [x]
