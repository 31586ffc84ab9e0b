"""Datasets for model inversion studies, with the MI split convention.

**private** classes train the target; **public** data (disjoint classes) trains the
attacker's prior. Private data is split train/test (seeded, stratified) for natural
accuracy. Images are float tensors in [0, 1], shape (C, H, W); the training loop applies
``Normalize(0.5, 0.5)`` so models and GAN priors live in [-1, 1].

Example:
    >>> from re_analysis.data import load_dataset
    >>> splits = load_dataset("mnist5k", seed=0)
    >>> splits.num_classes, len(splits.private_train), len(splits.public)
    (5, 2250, 2500)
"""

from .registry import (DATASETS, MISplits, dataset_info, default_image_size, hflip_preserves_labels,
                       labels_are_identities,
                       list_datasets, load_dataset, manifest_hash, materialize, register_dataset)
from .tensors import TensorImageDataset
from .folders import FolderImageDataset
from . import digits as _digits  # noqa: F401  (registers mnist5k, fashion-mnist)
from . import folders as _folders  # noqa: F401  (registers celeba, facescrub, ...)
from . import glyphs as _glyphs  # noqa: F401  (registers glyphs)

__all__ = ["MISplits", "TensorImageDataset", "FolderImageDataset", "load_dataset",
           "list_datasets", "register_dataset", "dataset_info",
           "default_image_size", "hflip_preserves_labels", "labels_are_identities", "manifest_hash", "materialize", "DATASETS"]
