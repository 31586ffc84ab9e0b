"""MIDRE's second feature-space claim, measured: private features of one class stay apart
from the other classes (Tran, Nguyen et al., TMLR 2025: RE moves reconstructions away from
the private features *and* keeps the private classes distinct, so utility survives).

Per private point, in the target's penultimate features (Euclidean distances, faiss):

- ``d_same``: distance to its nearest OTHER point of the same class;
- ``d_other``: distance to its nearest point of any other class;
- **margin** ``(d_other - d_same) / (d_other + d_same)`` in [-1, 1]: positive when the
  point sits nearer its own class; scale-free, so comparable across targets (each target
  has its own feature space);
- **nearest-neighbour purity**: share of points whose nearest other point is same-class;
- **silhouette** (Rousseeuw 1987; scikit-learn), from mean instead of nearest distances.

And the scale that makes the gap statistics comparable across targets,
:func:`feature_scale`: the median squared distance from a private feature to its nearest
same-class private neighbour.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = np.r_[rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))].astype("float32")
    >>> y = np.repeat([0, 1], 30)
    >>> s = class_separation(f, y)
    >>> s["nn_purity"], s["margin"] > 0.9
    (1.0, True)
"""

from __future__ import annotations

import numpy as np

from ..errors import ReAnalysisError
from ..metrics._arrays import as_features, as_labels
from ..metrics.knn import PrivateIndex, faiss_module

__all__ = ["class_separation", "feature_scale", "nearest_other_class", "heldout_margins"]


def _nearest_same_class(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared distance of each point to its nearest other point of its class (inf if alone)."""
    index = PrivateIndex(f, y, use_gpu=False)
    dist, idx = index.search(f, y, k=2)
    own = idx[:, 0] == np.arange(len(f))
    return np.where(own, dist[:, 1], dist[:, 0])  # duplicates may come first; then distance 0 is right


def nearest_other_class(features, labels) -> np.ndarray:
    """Squared distance of each point to its nearest point of ANOTHER class (faiss, exact)."""
    f = as_features(features, "features")
    y = as_labels(labels, len(f), "labels")
    faiss = faiss_module()
    out = np.full(len(f), np.inf)
    for c in np.unique(y):
        mine, rest = np.flatnonzero(y == c), np.flatnonzero(y != c)
        if len(rest) == 0:
            continue
        index = faiss.IndexFlatL2(f.shape[1])
        index.add(f[rest])
        d, _ = index.search(f[mine], 1)
        out[mine] = np.maximum(d[:, 0], 0)
    return out


def feature_scale(features, labels) -> float:
    """Median squared L2 distance from a feature to its nearest same-class neighbour: the
    unit in which the gap statistics are normalised (``*_normalized`` keys).

    Example:
        >>> import numpy as np
        >>> feature_scale(np.array([[0.], [2.], [10.], [13.]], "float32"), [0, 0, 1, 1])
        6.5
    """
    f = as_features(features, "features")
    y = as_labels(labels, len(f), "labels")
    d = _nearest_same_class(f, y)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        raise ReAnalysisError("feature_scale needs at least two features in some class")
    scale = float(np.median(d))
    if scale <= 0:  # duplicated features: fall back to the mean so the unit stays positive
        scale = float(d.mean())
    if scale <= 0:
        raise ReAnalysisError("every feature coincides with a same-class neighbour; the scale is zero")
    return scale


def class_separation(features, labels, silhouette: bool = True, per_point: bool = False) -> dict:
    """How far each class's features stay from the other classes (see module doc).

    Returns ``margin``, ``nn_purity``, ``silhouette`` (means over points) and the same per
    class under ``per_class``; ``per_point=True`` adds ``margins``, one per point (what a
    paired comparison across defenses needs). Needs at least two classes and two points per
    class.
    """
    f = as_features(features, "features")
    y = as_labels(labels, len(f), "labels")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ReAnalysisError("class separation needs features of at least two classes")
    if counts.min() < 2:
        raise ReAnalysisError(f"class separation needs at least two features per class; class "
                              f"{int(classes[counts.argmin()])} has {int(counts.min())}")
    d_same = np.sqrt(_nearest_same_class(f, y))
    d_other = np.sqrt(nearest_other_class(f, y))
    total = d_same + d_other
    margin = np.where(total > 0, (d_other - d_same) / np.where(total > 0, total, 1), 0.0)
    purity = d_same < d_other
    sil = np.full(len(f), np.nan)
    if silhouette:
        from sklearn.metrics import silhouette_samples

        sil = silhouette_samples(f.astype(np.float64), y)
    per_class = {int(c): {"margin": float(margin[y == c].mean()), "nn_purity": float(purity[y == c].mean()),
                          "silhouette": float(sil[y == c].mean())} for c in classes}
    return {"margin": float(margin.mean()), "nn_purity": float(purity.mean()), "silhouette": float(np.mean(sil)),
            "per_class": per_class, "n_points": int(len(f)), **({"margins": margin} if per_point else {})}


def heldout_margins(train_features, train_labels, test_features, test_labels) -> np.ndarray:
    """The margin of each HELD-OUT point against the training points: ``(d_other - d_same) /
    (d_other + d_same)`` with ``d_same`` its distance to the nearest training point of its
    class and ``d_other`` to the nearest of another class (Euclidean, faiss). On test
    features the margin says whether the classes stay apart for images the model did not
    memorise (any trained model separates its training points).

    Example:
        >>> import numpy as np
        >>> tr = np.array([[0.], [1.], [10.], [11.]], "float32")
        >>> heldout_margins(tr, [0, 0, 1, 1], np.array([[2.], [9.]], "float32"), [0, 1]).round(3).tolist()
        [0.778, 0.778]
    """
    f = as_features(train_features, "train features")
    y = as_labels(train_labels, len(f), "train labels")
    q = as_features(test_features, "test features")
    yq = as_labels(test_labels, len(q), "test labels")
    if q.shape[1] != f.shape[1]:
        raise ReAnalysisError(f"test features have {q.shape[1]} dimensions, training features {f.shape[1]}")
    missing = sorted(set(np.unique(yq).tolist()) - set(np.unique(y).tolist()))
    if missing or len(np.unique(y)) < 2:
        raise ReAnalysisError(f"held-out margins need training features of every test class and of at least two "
                              f"classes; missing: {missing}")
    faiss = faiss_module()
    d_same, d_other = np.empty(len(q)), np.empty(len(q))
    for c in np.unique(yq):
        mine = np.flatnonzero(yq == c)
        for target, rows in ((d_same, np.flatnonzero(y == c)), (d_other, np.flatnonzero(y != c))):
            index = faiss.IndexFlatL2(f.shape[1])
            index.add(f[rows])
            d, _ = index.search(q[mine], 1)
            target[mine] = np.sqrt(np.maximum(d[:, 0], 0))
    total = d_same + d_other
    return np.where(total > 0, (d_other - d_same) / np.where(total > 0, total, 1), 0.0)
