"""Is a prior good enough to attack with? Checked on public images it never trained on.

Two scale-free measures, both in the EVALUATION model's terms (not the target's, which
the attack optimises against):

- **FID ratio**: the Fréchet distance, in the evaluation model's penultimate features,
  between ``n`` prior samples and ``n`` held-out public images, divided by the same
  distance between ``n`` public TRAINING images and the same held-out images
  (real-vs-real, equal sizes, so FID's small-sample bias cancels). 1 means the samples
  are as close to unseen public data as real public data is; a prior that draws noise
  or a few modes scores far above. On identity datasets (fonts, faces) the held-out part
  is whole public identities the prior never trained on; held out per class, the
  reference would be near copies in the judge's identity features and even real images
  of other identities would fail (glyphs: real private fonts scored 19 against the floor 4).
- **class agreement** (conditional priors only, PLG-MI): the share of samples of class
  ``k`` that the evaluation model, restricted to the private classes 0..K-1, assigns to
  ``k``, as Cohen's kappa against chance 1/K: ``(share - 1/K) / (1 - 1/K)`` (0: chance, 1: all).

Floors (documented, scale-free): ``fid_ratio <= 4`` and, for conditional priors,
``class_kappa >= 0.25`` (at K=5: at least 40% of samples in their class, chance 20%).
A prior below a floor is reported with ``passed: False``; the study flags it in
``results.csv`` instead of silently attacking with it.

The evaluation model may have more outputs than the K private classes (an evaluation
model trained on private and public classes, private first): only the first K logits
are read.

Example:
    >>> q = prior_quality(prior, eval_model, heldout_public(prior))  # doctest: +SKIP
    >>> q["passed"], round(q["fid_ratio"], 2)  # doctest: +SKIP
    (True, 2.31)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..artifacts import atomic_write_json, read_json
from ..errors import ReAnalysisError
from ..models.inputs import predict_logits
from .priors import Prior, PriorConfig, config_from_info, heldout_public, public_parts

FID_RATIO_FLOOR = 4.0
CLASS_KAPPA_FLOOR = 0.25

__all__ = ["prior_quality", "record_prior_quality", "FID_RATIO_FLOOR", "CLASS_KAPPA_FLOOR"]


def prior_quality(prior: Prior, eval_model, heldout_images: torch.Tensor, *, num_private: int | None = None,
                  train_images: torch.Tensor | None = None, seed: int = 0, fid_ratio_floor: float = FID_RATIO_FLOOR,
                  class_kappa_floor: float = CLASS_KAPPA_FLOOR) -> dict[str, Any]:
    """Quality of ``prior`` against held-out public images, judged by ``eval_model``.

    Args:
        prior: a trained :class:`Prior`.
        eval_model: the evaluation classifier (``features(x)``; classes 0..K-1 private).
        heldout_images: public images the prior did not train on (uint8 pixels or [-1, 1]);
            :func:`heldout_public` returns them.
        num_private: K, the number of private classes (default: the prior's target classes).
        train_images: public training images for the real-vs-real reference (default: the
            prior's own public training part, reloaded from its config).
        seed: seeds the latent draws and the subsets.

    Returns:
        ``{"fid", "fid_real", "fid_ratio", "n", "class_share", "class_kappa", "passed", "floors", ...}``
        (class entries are None for unconditional priors).
    """
    from ..features import extract_features
    from ..metrics import frechet_distance

    heldout_images = torch.as_tensor(heldout_images)
    if heldout_images.ndim != 4 or len(heldout_images) < 2:
        raise ReAnalysisError("prior_quality needs at least 2 held-out public images (N, C, H, W); "
                              "pass heldout_public(prior)")
    k = int(num_private or prior.info["num_target_classes"])
    if train_images is None:
        train_images = public_parts(PriorConfig(**config_from_info(prior.info)))[1]
    n = min(len(heldout_images), len(train_images))
    g = torch.Generator().manual_seed(seed)
    real_ref = train_images[torch.randperm(len(train_images), generator=g)[:n]]
    heldout = heldout_images[torch.randperm(len(heldout_images), generator=g)[:n]]
    conditional = prior.generator.num_classes > 0
    labels = torch.arange(n) % k if conditional else None
    samples = prior.sample(n, seed=seed, labels=labels)
    dev = next(eval_model.parameters()).device
    f_held, f_real, f_fake = (extract_features(eval_model, x, device=dev).numpy() for x in (heldout, real_ref, samples))
    fid, fid_real = frechet_distance(f_fake, f_held), frechet_distance(f_real, f_held)
    ratio = fid / max(fid_real, 1e-12)
    out = {"n": n, "fid": fid, "fid_real": fid_real, "fid_ratio": ratio, "num_private": k,
           "class_share": None, "class_kappa": None,
           "floors": {"fid_ratio_max": fid_ratio_floor, "class_kappa_min": class_kappa_floor if conditional else None}}
    passed = ratio <= fid_ratio_floor
    if conditional:
        logits = predict_logits(eval_model, samples)
        share = float((logits[:, :k].argmax(1) == labels).float().mean())
        kappa = (share - 1 / k) / (1 - 1 / k)
        out.update(class_share=share, class_kappa=kappa)
        passed = passed and kappa >= class_kappa_floor
    out["passed"] = bool(passed)
    return out


def record_prior_quality(prior: Prior, eval_dir: str | Path, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """:func:`prior_quality` against the evaluation model trained in ``eval_dir``, written to
    ``<prior>/quality-<eval config hash>.json`` (atomically; reused when present)."""
    from ..runs import target_record
    from ..training import load_classifier

    if prior.run_dir is None:
        raise ReAnalysisError("record_prior_quality needs a prior loaded from its run directory")
    rec = target_record(eval_dir)
    path = Path(prior.run_dir) / f"quality-{rec['config_hash']}.json"
    if path.is_file():
        return read_json(path)
    eval_model = load_classifier(eval_dir, device)
    q = prior_quality(prior, eval_model, heldout_public(prior), seed=seed)
    q.update(eval_model=str(eval_dir), eval_config_hash=rec["config_hash"], prior=str(prior.run_dir),
             prior_kind=prior.kind, steps_fraction=prior.info.get("steps_fraction"))
    atomic_write_json(path, q)
    return q
