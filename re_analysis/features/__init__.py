"""Feature-space analysis: extraction, the gap between reconstructions, erased and private
features (MIDRE's first claim, measured), how far private classes stay apart (its second
claim, :func:`class_separation`), UMAP embedding and hull overlap.

Example:
    >>> from re_analysis.features import feature_gap
    >>> gap = feature_gap(f_priv, y_priv, f_re, y_re, f_recon, y_recon)  # doctest: +SKIP
    >>> gap["fraction_nearer_erased"]  # doctest: +SKIP
"""

from .extract import extract_features
from .gap import feature_gap
from .embed import hull_overlap, umap_embed
from .separation import class_separation, feature_scale, nearest_other_class

__all__ = ["extract_features", "feature_gap", "umap_embed", "hull_overlap", "class_separation", "feature_scale",
           "nearest_other_class"]
