"""Dataset registry: ``@register_dataset(name)`` and ``load_dataset(name, ...)``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ReAnalysisError

_DATASETS: dict[str, Callable[..., "MISplits"]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_SIZES: dict[str, int] = {}


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

    def describe(self) -> dict:
        return {"name": self.name, "private_train": len(self.private_train),
                "private_test": len(self.private_test), "public": len(self.public),
                "num_classes": self.num_classes, "num_public_classes": self.num_public_classes,
                "channels": self.channels, "image_size": self.image_size}


def register_dataset(name: str, description: str = "", image_size: int = 64):
    """Register a loader ``fn(root, seed, image_size, **kw) -> MISplits`` under ``name``.

    ``image_size`` is the side length the loader uses when none is asked for.
    """

    def deco(fn):
        _DATASETS[name] = fn
        _SIZES[name] = image_size
        _DESCRIPTIONS[name] = description or (inspect.getdoc(fn) or "").split("\n")[0]
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def default_image_size(name: str) -> int:
    """The side length ``load_dataset(name)`` returns when no ``image_size`` is given."""
    if name not in _DATASETS:
        raise ReAnalysisError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return _SIZES[name]


def dataset_info() -> dict[str, str]:
    return {k: _DESCRIPTIONS[k] for k in list_datasets()}


def load_dataset(name: str, root: str | None = None, seed: int = 0,
                 image_size: int | None = None, **kwargs) -> MISplits:
    """Load ``name`` and return its private train/test and public splits.

    Args:
        name: a registered dataset (``list_datasets()``).
        root: folder holding the data (ignored by the embedded ``mnist5k``).
        seed: seeds the private train/test split.
        image_size: resize images to this side length (default: the dataset's own).
    """
    if name not in _DATASETS:
        raise ReAnalysisError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 8):
        raise ReAnalysisError(f"image_size must be an integer >= 8, got {image_size!r}")
    return _DATASETS[name](root=root, seed=seed, image_size=image_size, **kwargs)


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
