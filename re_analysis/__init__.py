"""re-analysis: does Random Erasing defend classifiers against model inversion, and why?

The library trains defended classifiers (Random Erasing and the baselines), runs model
inversion attacks, and measures privacy, utility and the feature-space gap.

Example:
    >>> import re_analysis
    >>> eraser = re_analysis.RandomErasing(scale=(0.1, 0.4))
"""

__version__ = "0.1.0"

from .errors import ReAnalysisError
from .defenses import RandomErasing, create_defense, list_defenses
from .models import create_model, list_models
from .data import load_dataset, list_datasets

__all__ = ["ReAnalysisError", "RandomErasing", "create_defense", "list_defenses", "create_model",
           "list_models", "load_dataset", "list_datasets", "__version__"]


def __getattr__(name):
    # Heavier entry points load on first use, so `import re_analysis` stays light.
    if name in ("train", "load_classifier", "natural_accuracy"):
        from . import training
        return getattr(training, name)
    if name == "TrainConfig":
        from .config import TrainConfig
        return TrainConfig
    raise AttributeError(f"module 're_analysis' has no attribute {name!r}")
