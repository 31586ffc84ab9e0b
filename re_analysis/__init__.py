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


_LAZY = {
    "train": "training", "load_classifier": "training", "natural_accuracy": "training", "TrainConfig": "config",
    "extract_features": "features", "feature_gap": "features", "umap_embed": "features", "hull_overlap": "features",
    "attack_accuracy": "metrics", "knn_distance": "metrics", "PrivateIndex": "metrics", "prdc": "metrics",
    "frechet_distance": "metrics", "inception_fid": "metrics",
    "run_attack": "attacks", "AttackConfig": "attacks", "create_attack": "attacks", "list_attacks": "attacks",
    "run_study": "study", "load_preset": "study", "build_book": "book", "verify_runs": "artifacts",
}
__all__ += sorted(_LAZY)


def __getattr__(name):
    # Heavier entry points load on first use, so `import re_analysis` stays light
    # (no faiss, umap, papermill or attack code until asked for).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 're_analysis' has no attribute {name!r}")
