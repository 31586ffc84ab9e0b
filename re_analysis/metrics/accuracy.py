"""Attack accuracy: the evaluation model's top-k accuracy on reconstructions."""

from __future__ import annotations

import torch

from ..errors import ReAnalysisError
from ..models.inputs import predict_logits


def attack_accuracy(eval_model, images, labels, topk=(1, 5), batch_size: int = 256) -> dict[str, float]:
    """Share of reconstructions the evaluation model assigns to their target class (top-k).

    ``images`` are reconstructions in the suite's normalised space [-1, 1] (float), or
    uint8 images; ``labels`` their target classes. ``k`` larger than the number of classes
    is capped (top-5 of a 5-class model is 1.0 by definition).

    Example:
        >>> acc = attack_accuracy(eval_model, result.images, result.labels)  # doctest: +SKIP
        >>> acc["top1"]  # doctest: +SKIP
        0.84
    """
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels).long().cpu()
    if images.ndim != 4 or len(images) != len(labels):
        raise ReAnalysisError(f"attack_accuracy needs (N, C, H, W) images and N labels, got {tuple(images.shape)} "
                              f"and {tuple(labels.shape)}")
    logits = predict_logits(eval_model, images, batch_size)
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ReAnalysisError(f"labels must lie in 0-{logits.shape[1] - 1}, the evaluation model's classes")
    out = {}
    for k in topk:
        kk = min(k, logits.shape[1])
        hit = (logits.topk(kk, 1).indices == labels[:, None]).any(1)
        out[f"top{k}"] = float(hit.float().mean())
    return out
