"""Attack accuracy: an evaluation model's top-k accuracy on reconstructions."""

from __future__ import annotations

import torch

from ..errors import ReAnalysisError
from ..models.inputs import predict_logits
from .judges import classifier_hits, topk_reported


def attack_accuracy(eval_model, images, labels, topk=(1, 5), batch_size: int = 256,
                    num_private: int | None = None, closed_set: bool = False) -> dict[str, float]:
    """Share of reconstructions the evaluation model assigns to their target class (top-k).

    ``images`` are reconstructions in the suite's normalised space [-1, 1] (float), or
    uint8 images; ``labels`` their target classes. For an open-set evaluation model (one
    trained on private and public classes), ``num_private`` names the private classes
    (default: the model's own ``train_info``, else all); the verdict is open-set (a public
    top-1 is a miss) unless ``closed_set``, the field's verdict over the private logits.
    Top-k for k > 1 is NaN unless the private classes number more than 2k
    (:func:`~re_analysis.metrics.topk_reported`: top-5 of 5 digits is 1.0 by definition).

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
    if num_private is None:
        num_private = getattr(eval_model, "train_info", {}).get("num_private_classes") or logits.shape[1]
    if labels.min() < 0 or labels.max() >= num_private:
        raise ReAnalysisError(f"labels must lie in 0-{num_private - 1}, the evaluation model's private classes")
    out = {}
    for k in topk:
        if not topk_reported(k, num_private):
            out[f"top{k}"] = float("nan")
            continue
        hits = classifier_hits(logits, labels, k=k, num_private=num_private if closed_set else None)
        out[f"top{k}"] = float(hits.mean())
    return out
