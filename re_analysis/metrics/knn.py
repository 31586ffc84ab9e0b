"""KNN distance, the MI literature's privacy metric, on faiss.

Convention (GMI, KEDMI, PLG-MI, LOMMA code): for each reconstruction, the MINIMUM SQUARED
L2 distance, in the evaluation model's penultimate features, to the private training
images of the SAME class; the metric is the mean over reconstructions. The anchors loop
over classes with ``torch.cdist(...) ** 2``. Here faiss (``IndexFlatL2``, which returns
squared L2) finds the candidates, and the distances to the ``rerank`` best candidates are
recomputed in float64, so the result equals the brute-force convention to float64
precision (faiss' float32 ``|x|^2 + |y|^2 - 2xy`` form alone can be off in the last digits).
"""

from __future__ import annotations

import numpy as np

from ..errors import ReAnalysisError
from ._arrays import as_features, as_labels, same_width

INDEX_KINDS = ("flat", "hnsw")


def faiss_module():
    import faiss  # local import: `import re_analysis` stays light

    return faiss


def gpu_available() -> bool:
    faiss = faiss_module()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class PrivateIndex:
    """A per-class faiss index over private features: build once, query many reconstruction sets.

    Args:
        features: (N, D) private features; labels: (N,) their classes.
        kind: ``"flat"`` (exact) or ``"hnsw"`` (approximate graph search for very large
            private sets; measure its recall with :meth:`recall_against_exact`).
        use_gpu: put flat indexes on the GPU when faiss-gpu and a GPU are present
            (``None``: automatically).

    Example:
        >>> import numpy as np
        >>> from re_analysis.metrics import PrivateIndex
        >>> idx = PrivateIndex(np.eye(3, dtype="float32"), np.array([0, 0, 1]))
        >>> idx.min_sq_dist(np.zeros((1, 3), "float32"), np.array([1])).tolist()
        [1.0]
    """

    def __init__(self, features, labels, kind: str = "flat", hnsw_m: int = 32, ef_search: int = 128,
                 use_gpu: bool | None = None):
        if kind not in INDEX_KINDS:
            raise ReAnalysisError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        faiss = faiss_module()
        self.features = as_features(features, "private features")
        self.labels = as_labels(labels, len(self.features), "private labels")
        self.kind, self.dim = kind, self.features.shape[1]
        use_gpu = gpu_available() if use_gpu is None else use_gpu
        self._res = faiss.StandardGpuResources() if (use_gpu and kind == "flat") else None
        self.indexes, self.rows = {}, {}
        for c in np.unique(self.labels):
            rows = np.flatnonzero(self.labels == c)
            if kind == "flat":
                index = faiss.IndexFlatL2(self.dim)
                if self._res is not None:
                    index = faiss.index_cpu_to_gpu(self._res, 0, index)
            else:
                index = faiss.IndexHNSWFlat(self.dim, hnsw_m)
                index.hnsw.efSearch = ef_search
            index.add(self.features[rows])
            self.indexes[int(c)], self.rows[int(c)] = index, rows

    @property
    def classes(self) -> list[int]:
        return sorted(self.indexes)

    def search(self, queries, labels, k: int = 1, rerank: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """For each query, the ``k`` nearest SAME-class private points: (squared L2 float64, row indices)."""
        q = as_features(queries, "reconstruction features")
        y = as_labels(labels, len(q), "reconstruction labels")
        same_width(q, self.features, "reconstruction features", "private features")
        missing = sorted(set(np.unique(y).tolist()) - set(self.indexes))
        if missing:
            raise ReAnalysisError(f"reconstruction labels {missing[:10]} have no private features; "
                                  "pass private features for every attacked class")
        dist = np.full((len(q), k), np.inf)
        idx = np.full((len(q), k), -1, dtype=np.int64)
        for c in np.unique(y):
            qi = np.flatnonzero(y == c)
            rows = self.rows[int(c)]
            kk = min(max(k, rerank), len(rows))
            _, cand = self.indexes[int(c)].search(q[qi], kk)
            cand = np.where(cand < 0, 0, cand)
            glob = rows[cand]  # (nq, kk) private row indices
            diff = self.features[glob].astype(np.float64) - q[qi][:, None, :].astype(np.float64)
            exact = np.einsum("qkd,qkd->qk", diff, diff)
            order = np.argsort(exact, axis=1, kind="stable")[:, :k]
            take = min(k, kk)
            dist[qi, :take] = np.take_along_axis(exact, order, 1)[:, :take]
            idx[qi, :take] = np.take_along_axis(glob, order, 1)[:, :take]
        return dist, idx

    def min_sq_dist(self, queries, labels) -> np.ndarray:
        """Per query: the minimum squared L2 distance to its class's private features."""
        return self.search(queries, labels, k=1)[0][:, 0]

    def recall_against_exact(self, queries, labels) -> float:
        """Share of queries whose nearest neighbour matches exact search (1.0 for ``flat``)."""
        exact = PrivateIndex(self.features, self.labels, kind="flat", use_gpu=False)
        return float(np.mean(self.search(queries, labels, rerank=1)[1][:, 0] == exact.search(queries, labels, rerank=1)[1][:, 0]))


def knn_distance(private, private_labels, recon_features, recon_labels, per_sample: bool = False):
    """Mean (or per-sample) minimum squared L2 distance from each reconstruction to the
    private features of its own class (KNN distance; lower = closer to private data).

    The private features come first, with their labels, or a :class:`PrivateIndex` built
    once for many reconstruction sets (labels then ``None``).

    Example:
        >>> import numpy as np
        >>> priv = np.array([[0., 0.], [3., 4.]], "float32")
        >>> knn_distance(priv, [1, 1], np.array([[0., 1.]], "float32"), [1])
        1.0
        >>> index = PrivateIndex(priv, [1, 1])          # build once, query many times
        >>> knn_distance(index, None, np.array([[3., 3.]], "float32"), [1])
        1.0
    """
    if isinstance(private, PrivateIndex):
        index = private
    else:
        if private_labels is None:
            raise ReAnalysisError("knn_distance needs the private features and their labels, or a PrivateIndex")
        index = PrivateIndex(private, private_labels)
    d = index.min_sq_dist(recon_features, recon_labels)
    return d if per_sample else float(d.mean())
