"""Classifier registry. Every classifier has ``features(x)`` (penultimate activations)
and ``forward(x)`` (logits); inputs are normalised to [-1, 1].

Example:
    >>> from re_analysis.models import create_model
    >>> m = create_model("cnn28", num_classes=5, in_channels=1, image_size=28)
    >>> import torch; m.features(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 128])
"""

from .registry import (Classifier, create_model, list_models, model_info,
                       register_model)
from . import small as _small  # noqa: F401
from . import faces as _faces  # noqa: F401
from . import evaluators as _evaluators  # noqa: F401

__all__ = ["Classifier", "create_model", "list_models", "model_info", "register_model"]
