"""UMAP embedding (umap-learn) and convex-hull overlap (scipy + shapely) in 2-D."""

from __future__ import annotations

import numpy as np

from ..errors import ReAnalysisError
from ..metrics._arrays import as_features


def umap_embed(features, seed: int = 0, **umap_kwargs) -> np.ndarray:
    """2-D UMAP embedding of (N, D) features, seeded (McInnes et al., 2018; umap-learn).

    With a seed umap-learn runs single-threaded and is reproducible.

    Example:
        >>> emb = umap_embed(np.random.default_rng(0).normal(size=(100, 16)))  # doctest: +SKIP
        >>> emb.shape  # doctest: +SKIP
        (100, 2)
    """
    import torch

    x = as_features(features, "features")
    if len(x) < 4:
        raise ReAnalysisError(f"UMAP needs at least 4 points, got {len(x)}")
    threads = torch.get_num_threads()
    try:
        import umap  # local import: heavy (numba)

        kw = {"n_neighbors": min(15, len(x) - 1), "min_dist": 0.1, "random_state": seed, "n_jobs": 1, **umap_kwargs}
        return umap.UMAP(**kw).fit_transform(x).astype(np.float64)
    finally:
        # numba's OpenMP layer (under umap-learn) sets the process's OpenMP thread count to every core, and
        # torch reads that count: whatever a process trained or attacked after an embedding ran on other
        # threads, so with other float roundings (a study's one-worker tables differed from a fresh process's)
        torch.set_num_threads(threads)


def hull(points: np.ndarray):
    """Convex hull of 2-D points as a shapely polygon (degenerate sets give an empty area)."""
    from shapely.geometry import MultiPoint

    return MultiPoint([tuple(p) for p in np.asarray(points, dtype=np.float64)]).convex_hull


def hull_overlap(points_a, points_b) -> float:
    """Intersection-over-union of the convex hulls of two 2-D point sets (0 = disjoint, 1 = same hull)."""
    a, b = hull(points_a), hull(points_b)
    union = a.union(b).area
    return float(a.intersection(b).area / union) if union > 0 else 0.0
