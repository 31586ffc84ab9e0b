"""In-memory image datasets (the embedded digits and Fashion-MNIST)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Images (N, C, H, W) in [0, 1] and integer labels held in memory.

    Stored as uint8 to keep memory low; returned as float32.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float().div_(255), int(self.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float (N, C, H, W) in [0, 1] and labels (N,)."""
        return self.images.float().div_(255), self.labels.clone()

    def subset(self, idx) -> "TensorImageDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return TensorImageDataset(self.images[idx], self.labels[idx])
