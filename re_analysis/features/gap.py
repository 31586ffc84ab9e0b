"""The feature-space gap of MIDRE (Tran, Nguyen et al., TMLR 2025, Fig. 2), measured.

The paper shows, in target-model feature space, private features (f_priv), features of
Random-Erased private images (f_RE) and of reconstructions (f_recon), and argues that under
RE the reconstructions land near f_RE, away from f_priv. No code or single statistic was
released; these are the statistics this suite defines, in the full feature space:

- ``mean_dist_private`` / ``mean_dist_erased``: mean over reconstructions of the minimum
  squared L2 distance to the same-class private / erased features (faiss);
- ``fraction_nearer_erased``: share of reconstructions whose nearest same-class neighbour
  among private and erased features together is an erased one;
- ``coverage_private``: share of private points that have a same-class reconstruction
  inside their k-NN radius (Naeem et al.'s coverage, per class, averaged over points);
- ``mean_dist_private_normalized`` / ``mean_dist_erased_normalized``: the same distances
  in units of the target's own scale, :func:`~re_analysis.features.feature_scale` (the
  median squared distance from a private feature to its nearest same-class private
  neighbour, ``feature_scale``). Every target has its own feature space, so only the
  normalised distances compare across defenses; 1.0 means "as far as a private image is
  from its nearest same-class private image";
- the same per class, under ``per_class``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ReAnalysisError
from ..metrics._arrays import as_features, as_labels, same_width
from ..metrics.distribution import knn_radii
from ..metrics.knn import PrivateIndex
from .separation import feature_scale


def feature_gap(private_features, private_labels, erased_features, erased_labels, recon_features, recon_labels,
                nearest_k: int = 5, scale: float | None = None, per_sample: bool = False) -> dict:
    """Gap statistics between reconstructions, private and erased features (see module doc).

    ``scale`` overrides the normalising unit (default: :func:`feature_scale` of the
    private features; compare targets only with private sets of the same size per class).
    ``per_sample=True`` adds ``samples``: per reconstruction, its squared distances to the
    nearest same-class private and erased features and whether it is nearer the erased one
    (what paired comparisons across defenses need).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> priv = rng.normal(size=(50, 4)).astype("float32"); y = np.zeros(50, int)
        >>> erased = priv + 5
        >>> gap = feature_gap(priv, y, erased, y, erased[:10] + 0.01, y[:10])
        >>> gap["fraction_nearer_erased"]
        1.0
    """
    fp = as_features(private_features, "private features")
    fe = as_features(erased_features, "erased features")
    fr = as_features(recon_features, "reconstruction features")
    yp = as_labels(private_labels, len(fp), "private labels")
    ye = as_labels(erased_labels, len(fe), "erased labels")
    yr = as_labels(recon_labels, len(fr), "reconstruction labels")
    same_width(fr, fp, "reconstruction features", "private features")
    same_width(fe, fp, "erased features", "private features")
    d_priv = PrivateIndex(fp, yp).min_sq_dist(fr, yr)
    d_erased = PrivateIndex(fe, ye).min_sq_dist(fr, yr)
    nearer = d_erased < d_priv

    covered = np.zeros(len(fp), dtype=bool)
    recon_index = PrivateIndex(fr, yr)
    for c in np.unique(yp):
        rows = np.flatnonzero(yp == c)
        if c not in recon_index.indexes or len(rows) <= nearest_k:
            continue
        radius2 = knn_radii(fp[rows], nearest_k) ** 2
        covered[rows] = recon_index.min_sq_dist(fp[rows], np.full(len(rows), c)) <= radius2
    attacked = np.isin(yp, np.unique(yr))
    if not attacked.any():
        raise ReAnalysisError("no private class matches a reconstruction label")
    scale = feature_scale(fp, yp) if scale is None else float(scale)
    if not scale > 0:
        raise ReAnalysisError(f"the normalising scale must be positive, got {scale}")
    per_class = {}
    for c in np.unique(yr):
        m = yr == c
        pm = (yp == c)
        per_class[int(c)] = {"mean_dist_private": float(d_priv[m].mean()),
                             "mean_dist_erased": float(d_erased[m].mean()),
                             "mean_dist_private_normalized": float(d_priv[m].mean() / scale),
                             "mean_dist_erased_normalized": float(d_erased[m].mean() / scale),
                             "fraction_nearer_erased": float(nearer[m].mean()),
                             "coverage_private": float(covered[pm].mean())}
    return {"mean_dist_private": float(d_priv.mean()), "mean_dist_erased": float(d_erased.mean()),
            "mean_dist_private_normalized": float(d_priv.mean() / scale),
            "mean_dist_erased_normalized": float(d_erased.mean() / scale), "feature_scale": scale,
            "fraction_nearer_erased": float(nearer.mean()),
            "coverage_private": float(covered[attacked].mean()),
            "per_class": per_class, "n_reconstructions": int(len(fr)),
            **({"samples": {"d_private": d_priv, "d_erased": d_erased, "nearer_erased": nearer}} if per_sample else {})}
