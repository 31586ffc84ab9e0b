"""Dataset registry: ``@register_dataset(name)`` and ``load_dataset(name, ...)``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ReAnalysisError
from ..registry import Registry

DATASETS = Registry("dataset")


@dataclass
class MISplits:
    """The three splits of an MI study and what a model needs to know about them."""

    name: str
    private_train: Dataset
    private_test: Dataset
    public: Dataset
    num_classes: int
    num_public_classes: int
    channels: int
    image_size: int
    private_class_names: list[str] = field(default_factory=list)
    public_class_names: list[str] = field(default_factory=list)
    hflip_preserves_labels: bool = False
    labels_are_identities: bool = False
    manifest: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"name": self.name, "private_train": len(self.private_train),
                "private_test": len(self.private_test), "public": len(self.public),
                "num_classes": self.num_classes, "num_public_classes": self.num_public_classes,
                "channels": self.channels, "image_size": self.image_size,
                "hflip_preserves_labels": self.hflip_preserves_labels,
                "labels_are_identities": self.labels_are_identities}


# The standard training augmentations a dataset may declare (implemented in re_analysis.augment).
RECIPES = ("ppa", "shift", "none")


def augmentation_recipe(name: str, channels: int) -> str:
    """The standard augmentation recipe of dataset ``name``: the one it declared at
    registration, else ``"ppa"`` for colour images and ``"shift"`` for one-channel ones.

    Example:
        >>> augmentation_recipe("mnist5k", 1), augmentation_recipe("no-such-dataset", 3)
        ('shift', 'ppa')
    """
    declared = DATASETS.meta(name).get("augmentation") if name in DATASETS else None
    if declared is not None:
        return declared
    return "ppa" if channels == 3 else "shift"


def register_dataset(name: str, description: str = "", image_size: int = 64, hflip: bool | None = False,
                     augmentation: str | None = None, identities: bool = False):
    """Register a loader ``fn(root, seed, image_size, **kw) -> MISplits`` under ``name``.

    ``image_size`` is the side length the loader uses when none is asked for; ``hflip``
    declares whether a horizontal flip keeps an image's label (faces, dogs, clothes: yes;
    digits and glyphs: no, a mirrored 2 is not a 2). Priors, attacks and training flip
    only where it does. ``augmentation`` names the standard training augmentation
    (``re_analysis.augment``: ``"ppa"``, ``"shift"``, ``"none"``); None chooses it from the
    images' channels. ``identities`` declares that a label names an identity (a person, a
    font) rather than a category (a digit): a prior's held-out quality check then holds out
    whole public identities, since images of an identity the prior trained on are near
    copies in a judge's identity features (on glyphs, to held-out images of trained fonts:
    FID 0.36 for real images of those fonts, 6.9 for real fonts the prior never saw).
    """
    if augmentation is not None:
        if augmentation not in RECIPES:
            raise ReAnalysisError(f"dataset {name!r} declares augmentation {augmentation!r}; "
                                  f"choose one of {', '.join(RECIPES)}")
    return DATASETS.register(name, description, image_size=image_size, hflip=hflip, augmentation=augmentation,
                             identities=identities)


def list_datasets() -> list[str]:
    return DATASETS.names()


def default_image_size(name: str) -> int:
    """The side length ``load_dataset(name)`` returns when no ``image_size`` is given."""
    return DATASETS.meta(name)["image_size"]


def hflip_preserves_labels(name: str) -> bool | None:
    """Whether a horizontal flip keeps the labels of dataset ``name`` (declared at registration;
    None: it depends on the data and the loader says so on the splits it returns)."""
    return DATASETS.meta(name)["hflip"]


def labels_are_identities(name: str) -> bool:
    """Whether the labels of dataset ``name`` name identities (fonts, people), as declared at
    registration; a prior's quality check then holds out whole public identities."""
    return bool(DATASETS.meta(name).get("identities", False))


def dataset_info() -> dict[str, str]:
    return DATASETS.info()


def load_dataset(name: str, root: str | None = None, seed: int = 0,
                 image_size: int | None = None, **kwargs) -> MISplits:
    """Load ``name`` and return its private train/test and public splits.

    Args:
        name: a registered dataset (``list_datasets()``).
        root: folder holding the data (ignored by the embedded ``mnist5k``).
        seed: seeds the private train/test split.
        image_size: resize images to this side length (default: the dataset's own).
    """
    loader = DATASETS.get(name)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 8):
        raise ReAnalysisError(f"image_size must be an integer >= 8, got {image_size!r}")
    splits = loader(root=root, seed=seed, image_size=image_size, **kwargs)
    if hflip_preserves_labels(name) is not None:  # None: the loader decides (imagefolder's `hflip` option)
        splits.hflip_preserves_labels = hflip_preserves_labels(name)
    splits.labels_are_identities = labels_are_identities(name)
    return splits


def class_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split by whole classes: a ``test_fraction`` of the classes (at
    least one, never all) goes to the test side with every image it has."""
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ReAnalysisError("a split by whole classes needs at least 2 classes")
    n_test = min(len(classes) - 1, max(1, int(round(len(classes) * test_fraction))))
    held = np.random.default_rng(seed).permutation(classes)[:n_test]
    test = np.isin(labels, held)
    return np.flatnonzero(~test), np.flatnonzero(test)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded per-class train/test split (at least one test item per class)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = max(1, int(round(len(idx) * test_fraction))) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def materialize(ds: Dataset, batch_size: int = 256, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``ds`` as one uint8 tensor (N, C, H, W) and its labels (N,).

    Training and attacks index batches out of memory: at MI scales (at most tens of
    thousands of images) this is far faster than per-item loading on CPU and GPU alike.
    """
    if hasattr(ds, "images") and getattr(ds.images, "dtype", None) == torch.uint8:
        return ds.images, ds.labels
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    xs, ys = [], []
    for x, y in loader:
        xs.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
        ys.append(torch.as_tensor(y))
    if not xs:
        raise ReAnalysisError("the dataset is empty; check the data folder and the split")
    return torch.cat(xs), torch.cat(ys).long()


def manifest_hash(splits: MISplits) -> str | None:
    """The content hash of the data ``splits`` were built from (its manifest's ``hash``), or
    None for a dataset without a manifest. Put it into a run's config hash, so that runs on
    other data (say, other font versions of ``glyphs``) never mix.

    Example:
        >>> manifest_hash(load_dataset("mnist5k")) is None
        True
    """
    return splits.manifest.get("hash") if splits.manifest else None
