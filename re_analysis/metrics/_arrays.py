"""Input checks shared by the metrics: plain arrays in, plain arrays out (faiss style)."""

from __future__ import annotations

import numpy as np

from ..errors import ReAnalysisError


def as_features(x, name: str) -> np.ndarray:
    """numpy or torch (N, D) features -> C-contiguous float32, with finite values checked."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ReAnalysisError(f"{name} must be a 2-D (N, D) feature array, got shape {x.shape}; flatten or extract features first")
    if len(x) == 0:
        raise ReAnalysisError(f"{name} is empty; pass at least one feature vector")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise ReAnalysisError(f"{name} has NaN or infinite values in {len(rows)} row(s) (first: row {rows[0]}); "
                              "check the model's features for overflow or the input images for NaN")
    return x


def as_labels(y, n: int, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ReAnalysisError(f"{name} must be a 1-D array of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ReAnalysisError(f"{name} must hold integer class labels")
    return y.astype(np.int64)


def same_width(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ReAnalysisError(f"{na} has {a.shape[1]} dimensions but {nb} has {b.shape[1]}; "
                              "extract both with the same model")
