"""FID and precision / recall / density / coverage between reconstructions and private images.

Both are computed on features the caller chooses; the suite uses the evaluation model's
penultimate features, since Inception weights cannot be downloaded here (``inception_fid``
takes a local weights file when the user has one).

PRDC follows Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative
Models", ICML 2020: k-NN radii of real points. For model inversion the suite reports it as
PPA does (Struppek et al., ICML 2022, ``metrics/prcd.py``): per target class, real = that
class's private images, fake = that class's reconstructions, k = 3, averaged over classes
(:func:`prdc_per_class`); pooled over classes, a reconstructed "1" that resembles a real
"3" would count as precise. Deviations from PPA's code, kept on purpose: Naeem's
definitions throughout (PPA tests precision/recall against the nearest real/fake point's
ball only and divides density by the number of real instead of fake points), and class 0
is judged against its own images (PPA's ``if cls:`` skips the class filter for class 0).
Unlike the ``prdc`` package, which
holds full N x M distance matrices, the distances are processed in row blocks, so memory
grows with ``block * M`` (about ``block_bytes``, 256 MiB by default) instead of
``N * M``; the k-NN radii come from faiss.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from ..errors import ReAnalysisError
from ._arrays import as_features, same_width
from .knn import faiss_module


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the
    features are Inception pool features; Heusel et al., NeurIPS 2017)."""
    a = as_features(feats_a, "reconstruction features").astype(np.float64)
    b = as_features(feats_b, "private features").astype(np.float64)
    same_width(a, b, "reconstruction features", "private features")
    if len(a) < 2 or len(b) < 2:
        raise ReAnalysisError("FID needs at least 2 samples in each set")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are handled below
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distance of each row to its k-th nearest OTHER row (faiss, exact)."""
    faiss = faiss_module()
    if len(x) <= k:
        raise ReAnalysisError(f"PRDC with k={k} needs more than {k} points per set, got {len(x)}; lower nearest_k")
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d, _ = index.search(x, k + 1)  # the first hit is the point itself
    return np.sqrt(np.maximum(d[:, k], 0)).astype(np.float64)


def _block_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min_(0)


def prdc(real_features, fake_features, nearest_k: int = 5, block: int | None = None,
         block_bytes: int = 256 * 2**20) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (Naeem et al. 2020).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> r = rng.normal(size=(200, 8)).astype("float32")
        >>> m = prdc(r, r + 0.01)
        >>> round(m["precision"], 2), round(m["coverage"], 2)
        (1.0, 1.0)
    """
    real = as_features(real_features, "real features")
    fake = as_features(fake_features, "fake features")
    same_width(real, fake, "fake features", "real features")
    r_rad = torch.from_numpy(knn_radii(real, nearest_k))
    f_rad = torch.from_numpy(knn_radii(fake, nearest_k))
    R, Fk = torch.from_numpy(real).double(), torch.from_numpy(fake).double()
    # rows per block so that one (block x M) float64 distance matrix stays near block_bytes
    block = block or max(1, block_bytes // (8 * len(Fk)))
    r_rad2, f_rad2 = r_rad ** 2, f_rad ** 2
    precision_hit = torch.zeros(len(Fk), dtype=torch.bool)
    density_count = torch.zeros(len(Fk), dtype=torch.float64)
    recall_hit = torch.zeros(len(R), dtype=torch.bool)
    nearest_fake = torch.full((len(R),), float("inf"), dtype=torch.float64)
    for i in range(0, len(R), block):
        d = _block_sq_dists(R[i:i + block], Fk)  # (block of real, all fake)
        inside_real = d <= r_rad2[i:i + block, None]
        precision_hit |= inside_real.any(0)
        density_count += inside_real.sum(0)
        recall_hit[i:i + block] = (d <= f_rad2[None, :]).any(1)
        nearest_fake[i:i + block] = d.min(1).values
    return {"precision": float(precision_hit.double().mean()),
            "recall": float(recall_hit.double().mean()),
            "density": float(density_count.sum() / (nearest_k * len(Fk))),
            "coverage": float((nearest_fake <= r_rad2).double().mean())}


def prdc_per_class(real_features, real_labels, fake_features, fake_labels, nearest_k: int = 3) -> dict:
    """Precision / recall / density / coverage per class, averaged over classes (PPA's
    convention, k = 3; see module doc). Classes with at most ``nearest_k`` real or fake
    points are skipped (their radii are undefined); ``classes`` counts those averaged.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(40, 4)).astype("float32"); y = np.repeat([0, 1], 20)
        >>> real[y == 1] += 10  # two far-apart classes
        >>> fake, fy = real[[0, 1, 2, 3, 20, 21, 22, 23]] + 0.01, np.repeat([0, 1], 4)
        >>> m = prdc_per_class(real, y, fake, fy)
        >>> m["precision"], m["classes"]
        (1.0, 2)
        >>> prdc_per_class(real, y, fake, 1 - fy)["precision"]  # each class's fakes look like the other class
        0.0
    """
    from ._arrays import as_labels

    real = as_features(real_features, "real features")
    fake = as_features(fake_features, "fake features")
    same_width(real, fake, "fake features", "real features")
    yr = as_labels(real_labels, len(real), "real labels")
    yf = as_labels(fake_labels, len(fake), "fake labels")
    keys = ("precision", "recall", "density", "coverage")
    per_class = {}
    for c in np.unique(yf):
        r, f = real[yr == c], fake[yf == c]
        if len(r) > nearest_k and len(f) > nearest_k:
            per_class[int(c)] = prdc(r, f, nearest_k=nearest_k)
    out = {k: float(np.mean([m[k] for m in per_class.values()])) if per_class else float("nan") for k in keys}
    out.update({"classes": len(per_class), "nearest_k": nearest_k, "per_class": per_class})
    return out


def inception_fid(private_images: torch.Tensor, recon_images: torch.Tensor, weights_path: str,
                  batch_size: int = 64, device: str = "cpu") -> float:
    """FID in torchvision Inception-v3 pool features, from a LOCAL weights file only.

    Images are float in [-1, 1] or [0, 1] (grey images are repeated to 3 channels) and are
    resized to 299 px. Nothing is downloaded: pass the path of a torchvision
    ``inception_v3`` state dict (safetensors or a ``weights_only`` torch file).
    """
    from pathlib import Path

    from torchvision.models import inception_v3

    p = Path(weights_path)
    if not p.is_file():
        raise ReAnalysisError(f"Inception weights {p} not found; pass the path of a local inception_v3 state dict, "
                              "or use the evaluation-model FID the suite reports by default")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(state)
    net.fc = torch.nn.Identity()
    net = net.to(device).eval()

    @torch.no_grad()
    def feats(x):
        out = []
        for i in range(0, len(x), batch_size):
            b = x[i:i + batch_size].float().to(device)
            b = b * 0.5 + 0.5 if b.min() < 0 else b
            if b.shape[1] == 1:
                b = b.repeat(1, 3, 1, 1)
            b = torch.nn.functional.interpolate(b, size=(299, 299), mode="bilinear", align_corners=False)
            mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
            out.append(net((b - mean) / std).cpu())
        return torch.cat(out).numpy()

    return frechet_distance(feats(recon_images), feats(private_images))
