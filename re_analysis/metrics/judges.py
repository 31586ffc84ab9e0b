"""Judges of reconstructions: who says a reconstruction shows its target identity.

Attack accuracy is only as good as its judge (Ho et al., "Revisiting Model Inversion
Evaluation", arXiv 2505.03519: the standard evaluation model accepts Type-I adversarial
reconstructions). The suite asks every judge of :data:`JUDGE_TABLE` (a :class:`JudgeSpec`:
its name, and how it scores a :class:`JudgeBench` of images) and keeps every
per-reconstruction verdict, so intervals and agreement can be computed:

- **classifier judges** (:func:`classifier_hits`): an evaluation model's top-k. Trained
  *open-set* (private and public classes; see ``TrainConfig(role="eval")``), its
  top-1 over all classes is the open-set verdict: a reconstruction it calls a public
  identity is a miss. The argmax over the private logits only is the field's closed-set
  verdict (``num_private``). The robust judge is the same, adversarially trained.
- **the pixel judge** (:func:`pixel_judge`): the majority label of the ``k`` nearest
  private AND public training images in pixel space (faiss, squared L2); no gradients,
  nothing to fool. Its reject option says "nothing at all" for a reconstruction farther
  from every training image than real images are from each other (:func:`reject_radius`).
- **agreement** (:func:`judge_agreement`): the share of reconstructions all judges accept.

Plus the baseline an attack gets for free (:func:`chance_acceptance`): prior samples the
target already labels as a class, judged like reconstructions.

Example:
    >>> import numpy as np
    >>> logits = np.array([[3., 1., 0., 5.], [0., 2., 1., 0.]])  # 3 private classes + 1 public
    >>> classifier_hits(logits, [0, 1]).tolist()                  # open set: row 0 is public
    [False, True]
    >>> classifier_hits(logits, [0, 1], num_private=3).tolist()   # closed set: argmax of 0-2
    [True, True]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ReAnalysisError
from ._arrays import as_labels
from .knn import faiss_module

__all__ = ["topk_reported", "classifier_hits", "judged_public", "pixel_judge", "pixel_vectors",
           "reject_radius", "judge_agreement", "accepted_prior_samples", "chance_acceptance", "JudgeSpec", "JudgeBench", "JUDGE_TABLE", "PRIMARY_JUDGE",
           "judge_ceilings_of", "judge_spec", "register_judge", "unregister_judge", "score_images", "agreement_columns",
           "judge_columns", "scored_names", "score_open_set", "score_closed_set", "score_robust", "score_pixels"]


@dataclass(frozen=True)
class JudgeSpec:
    """One judge: its name, what the book calls it, and how it scores images.

    Every column of a judge is spelt from ``name`` (``top1``): ``hit_<name>`` (its 0/1 verdict
    per reconstruction in ``judgements.csv``), ``attack_accuracy_<name>`` and
    ``chance_accuracy_<name>`` (``results.csv``; ``summary.csv`` adds ``_mean``, ``_std``,
    ``_ci_low``, ``_ci_high``), ``ceiling_<name>`` (its acceptance of held-out private images);
    ``display`` is what the book calls it.

    ``score(bench)`` returns the judge's per-image columns for the images of a
    :class:`JudgeBench` (at least ``hit_<name>``), or ``{}`` when what it needs is not on the
    bench (no robust model): the judge is then absent, its numbers NaN. ``companions`` are
    other ``hit_<x>`` columns its score writes whose mean is kept as ``attack_accuracy_<x>``
    (the open-set judge's top-5); ``agreement``: one of the judges whose joint acceptance is
    ``all_accept``; ``mark``: its letter on the leakage gallery ("" for none).

    Example (a judge is one registration: :func:`register_judge`):
        >>> spec = judge_spec("pixel")
        >>> spec.column, spec.accuracy, spec.chance, spec.ceiling
        ('hit_pixel', 'attack_accuracy_pixel', 'chance_accuracy_pixel', 'ceiling_pixel')
    """

    name: str
    display: str
    score: Callable[[JudgeBench], dict] | None = None
    companions: tuple[str, ...] = ()
    agreement: bool = False
    mark: str = ""

    @property
    def column(self) -> str:
        return f"hit_{self.name}"

    @property
    def accuracy(self) -> str:
        return f"attack_accuracy_{self.name}"

    @property
    def chance(self) -> str:
        return f"chance_accuracy_{self.name}"

    @property
    def ceiling(self) -> str:
        return f"ceiling_{self.name}"


@dataclass
class JudgeBench:
    """What the judges read when they score ``images`` (the suite's convention: uint8 pixels or
    normalised floats) with their target ``labels``: the evaluation model and the robust one
    (``evaluator``, ``robust``: objects with ``.model`` and ``.num_private``, the robust one
    possibly None), the pixel judge's memory (``memory``: private and public training images
    and the reject radius; :class:`re_analysis.evaluation.TrainingImages`) and its ``pixel_k``.
    ``logits(role)`` gives a model's logits on the images, computed once for all judges."""

    images: torch.Tensor
    labels: torch.Tensor
    evaluator: Any = None
    robust: Any = None
    memory: Any = None
    pixel_k: int = 5
    _logits: dict = field(default_factory=dict, repr=False)

    def logits(self, role: str) -> torch.Tensor:
        """Logits of ``role`` ("evaluator" or "robust") on the images (CPU float32)."""
        from ..models.inputs import predict_logits

        if role not in self._logits:
            self._logits[role] = predict_logits(getattr(self, role).model, self.images)
        return self._logits[role]


def score_open_set(bench: JudgeBench) -> dict:
    """The open-set evaluation model: top-1 over private and public classes (a public identity
    is a miss), its prediction, whether that is public, and top-5 with more than 10 private
    classes."""
    z, y, n = bench.logits("evaluator"), bench.labels, bench.evaluator.num_private
    out = {"eval_pred": z.argmax(1).numpy(), "hit_top1": classifier_hits(z, y), "eval_public": judged_public(z, n)}
    if topk_reported(5, n):
        out["hit_top5"] = classifier_hits(z, y, k=5)
    return out


def score_closed_set(bench: JudgeBench) -> dict:
    """The field's closed-set verdict: the evaluation model's argmax over the private classes."""
    z, y, n = bench.logits("evaluator"), bench.labels, bench.evaluator.num_private
    out = {"hit_top1_closed": classifier_hits(z, y, num_private=n)}
    if topk_reported(5, n):
        out["hit_top5_closed"] = classifier_hits(z, y, k=5, num_private=n)
    return out


def score_robust(bench: JudgeBench) -> dict:
    """The adversarially trained evaluation model's open-set top-1 (absent without one)."""
    if bench.robust is None:
        return {}
    z, y = bench.logits("robust"), bench.labels
    return {"robust_pred": z.argmax(1).numpy(), "hit_robust": classifier_hits(z, y),
            "robust_public": judged_public(z, bench.robust.num_private)}


def score_pixels(bench: JudgeBench) -> dict:
    """The pixel judge (:func:`pixel_judge`) against the bench's training images."""
    m = bench.memory
    if m is None:
        return {}
    px = pixel_judge(m.private, m.private_labels, bench.images, bench.labels, m.public, m.public_labels,
                     k=bench.pixel_k, num_private=m.num_private, max_sq_distance=m.reject_sq_distance)
    return {"pixel_pred": px["predicted"], "hit_pixel": px["hits"], "pixel_nearest_public": px["nearest_public"],
            "pixel_public": px["predicted"] >= m.num_private, "pixel_rejected": px["predicted"] < 0,
            "pixel_nearest_sq_distance": px["nearest_sq_distance"], "pixel_nearest_index": px["nearest_index"]}


#: The judges, in the order the book shows them: the one table every room reads. Add one with
#: :func:`register_judge` (a list, so that a registration reaches every room that reads it).
JUDGE_TABLE: list[JudgeSpec] = [
    JudgeSpec("top1", "open-set evaluation model", score_open_set, companions=("top5",), agreement=True, mark="E"),
    JudgeSpec("robust", "robust evaluation model", score_robust, agreement=True, mark="R"),
    JudgeSpec("pixel", "pixel nearest neighbours", score_pixels, agreement=True, mark="P"),
    JudgeSpec("top1_closed", "closed-set evaluation model", score_closed_set, companions=("top5_closed",)),
]
PRIMARY_JUDGE = "top1"  # the judge the verdict summary reads: the open-set evaluation model


def register_judge(spec: JudgeSpec) -> JudgeSpec:
    """Add a judge to :data:`JUDGE_TABLE`: every evaluation scores with it from then on, and
    its columns reach the results, summaries, verdicts, forest plots and the book's tables.

    Example:
        >>> import numpy as np
        >>> def bright(bench):  # hit: the image's mean pixel is above the middle grey
        ...     return {"hit_bright": bench.images.float().flatten(1).mean(1).numpy() > 0}
        >>> _ = register_judge(JudgeSpec("bright", "brightness", bright))
        >>> judge_spec("attack_accuracy_bright").display
        'brightness'
        >>> unregister_judge("bright")
    """
    if not spec.name.isidentifier():
        raise ReAnalysisError(f"a judge's name must be a Python identifier (it spells columns), got {spec.name!r}")
    if spec.score is None:
        raise ReAnalysisError(f"judge {spec.name!r} has no score function; pass score=f(bench) -> columns")
    if any(j.name == spec.name for j in JUDGE_TABLE):
        raise ReAnalysisError(f"a judge named {spec.name!r} is registered already; pick another name or "
                              "unregister_judge it first")
    JUDGE_TABLE.append(spec)
    return spec


def unregister_judge(name: str) -> None:
    """Remove the judge ``name`` from :data:`JUDGE_TABLE`."""
    JUDGE_TABLE.remove(judge_spec(name))


def score_images(bench: JudgeBench, judges=None) -> dict[str, Any]:
    """Every judge's columns on the bench's images, in table order, and ``all_accept`` (every
    agreement judge present accepts). ``judges``: the specs to ask (default: the table)."""
    rows: dict[str, Any] = {}
    for spec in JUDGE_TABLE if judges is None else judges:
        cols = spec.score(bench)
        if cols and spec.column not in cols:
            raise ReAnalysisError(f"judge {spec.name!r} scored no {spec.column!r} column; its score function "
                                  f"must return it (got {sorted(cols)})")
        rows.update(cols)
    return rows


def agreement_columns(columns) -> list[str]:
    """The hit columns among ``columns`` whose joint acceptance is ``all_accept``."""
    return [j.column for j in JUDGE_TABLE if j.agreement and j.column in columns]


def scored_names() -> list[str]:
    """Every judge's name and its companions' (``top1``, ``top5``, ...), in table order: each is a
    ``hit_<name>`` column and an ``attack_accuracy_<name>``."""
    return [n for j in JUDGE_TABLE for n in (j.name, *j.companions)]


def judge_columns() -> list[str]:
    """Every judge's hit columns and their companions', in table order."""
    return [f"hit_{n}" for n in scored_names()]


def judge_spec(key: str) -> JudgeSpec:
    """The judge called ``key``: its name (``robust``) or any of its columns (``hit_robust``,
    ``attack_accuracy_robust``, ...).

    Example:
        >>> judge_spec("robust").column, judge_spec("hit_robust").accuracy, judge_spec("robust").ceiling
        ('hit_robust', 'attack_accuracy_robust', 'ceiling_robust')
    """
    for spec in JUDGE_TABLE:
        if key in (spec.name, spec.column, spec.accuracy, spec.chance, spec.ceiling):
            return spec
    raise ReAnalysisError(f"unknown judge {key!r}; the judges are {', '.join(j.name for j in JUDGE_TABLE)}")


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def topk_reported(k: int, num_private: int) -> bool:
    """Top-k is reported only when the attacked classes number more than ``2 k`` (top-5:
    more than 10 classes, as on faces); with 5 digits top-5 is 1.0 by definition."""
    return k == 1 or num_private > 2 * k


def classifier_hits(logits, labels, k: int = 1, num_private: int | None = None) -> np.ndarray:
    """Per reconstruction: is ``labels[i]`` among the top-``k`` of ``logits[i]``?

    ``num_private`` restricts the verdict to the first ``num_private`` logits (the
    closed-set verdict of an open-set model); ``None`` uses all of them (open set).
    """
    z = _numpy(logits).astype(np.float64)
    if z.ndim != 2:
        raise ReAnalysisError(f"logits must be (N, classes), got shape {z.shape}")
    y = as_labels(labels, len(z), "reconstruction labels")
    if num_private is not None:
        if not 1 <= num_private <= z.shape[1]:
            raise ReAnalysisError(f"num_private={num_private} must lie in 1-{z.shape[1]}, the judge's classes")
        z = z[:, :num_private]
    if len(y) and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ReAnalysisError(f"labels must lie in 0-{z.shape[1] - 1}, the judge's (private) classes")
    k = min(k, z.shape[1])
    top = np.argsort(-z, axis=1, kind="stable")[:, :k]
    return (top == y[:, None]).any(1)


def judged_public(logits, num_private: int) -> np.ndarray:
    """Per reconstruction: does an open-set judge's top-1 name a public class?"""
    z = _numpy(logits)
    return z.argmax(1) >= num_private


def pixel_vectors(images) -> np.ndarray:
    """Images in the suite's convention (uint8 pixels or normalised floats) -> (N, C*H*W)
    float32 rows in normalised space [-1, 1]."""
    from ..models.inputs import as_model_input

    x = as_model_input(torch.as_tensor(images))
    if x.ndim != 4:
        raise ReAnalysisError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    return np.ascontiguousarray(x.flatten(1).numpy(), dtype=np.float32)


def reject_radius(bank_images, quantile: float = 0.999, max_queries: int = 5000, seed: int = 0) -> float:
    """The pixel judge's reject threshold (squared L2, normalised pixels): the ``quantile``
    of the training images' distances to their nearest OTHER training image. Fixed on the
    training data alone; a reconstruction farther than this from every training image
    shows nothing the data holds ("nothing at all" is a miss). At most ``max_queries``
    training images (a seeded sample) are searched against all of them.

    Example:
        >>> import numpy as np
        >>> reject_radius(np.zeros((3, 1, 2, 2), "uint8"))
        0.0
    """
    if not 0 < quantile <= 1:
        raise ReAnalysisError(f"reject quantile must lie in (0, 1], got {quantile}")
    bank = pixel_vectors(bank_images)
    if len(bank) < 2:
        raise ReAnalysisError("the reject radius needs at least 2 training images")
    faiss = faiss_module()
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(bank)
    rows = np.arange(len(bank))
    if len(bank) > max_queries:
        rows = np.sort(np.random.default_rng(seed).choice(len(bank), max_queries, replace=False))
    d, i = index.search(bank[rows], 2)
    # the first hit is usually the image itself; exact duplicates may swap places
    own = np.where(i[:, 0] == rows, d[:, 1], d[:, 0])
    return float(np.quantile(np.maximum(own, 0), quantile))


def pixel_judge(private_images, private_labels, recon_images, recon_labels, public_images=None,
                public_labels=None, k: int = 5, num_private: int | None = None,
                max_sq_distance: float | None = None) -> dict[str, np.ndarray]:
    """The gradient-free judge: majority label of the ``k`` nearest training images in pixel
    space, private and public together (public labels are offset by ``num_private``, so a
    public majority is a miss). Ties go to the label met first, i.e. the nearer one.

    A reconstruction whose nearest training image is farther than ``max_sq_distance``
    (see :func:`reject_radius`) is rejected: predicted ``-1``, a miss.

    Returns per reconstruction: ``hits`` (bool), ``predicted`` (label; public ones
    offset, -1 rejected), ``nearest_public`` (its single nearest image is public),
    ``nearest_sq_distance`` and ``nearest_index`` (row in private, then public images).

    Example:
        >>> import numpy as np
        >>> priv = np.stack([np.full((1, 2, 2), v, "uint8") for v in (0, 10, 250)])
        >>> pub = np.full((1, 1, 2, 2), 255, "uint8")
        >>> out = pixel_judge(priv, [0, 0, 1], priv[:2], [0, 1], pub, [0], k=1)
        >>> out["hits"].tolist(), out["predicted"].tolist()
        ([True, False], [0, 0])
    """
    if not isinstance(k, int) or k < 1:
        raise ReAnalysisError(f"pixel judge k must be a positive integer, got {k!r}")
    rec = pixel_vectors(recon_images)
    y = as_labels(recon_labels, len(rec), "reconstruction labels")
    bank = pixel_vectors(private_images)
    bank_y = as_labels(private_labels, len(bank), "private labels")
    n_priv = len(bank)
    offset = int(num_private if num_private is not None else bank_y.max() + 1)
    if public_images is not None and len(public_images):
        pub = pixel_vectors(public_images)
        pub_y = as_labels(public_labels, len(pub), "public labels") + offset
        bank, bank_y = np.concatenate([bank, pub]), np.concatenate([bank_y, pub_y])
    if rec.shape[1] != bank.shape[1]:
        raise ReAnalysisError(f"reconstructions have {rec.shape[1]} pixel values but training images "
                              f"{bank.shape[1]}; pass images of the same size and channels")
    faiss = faiss_module()
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(bank)
    kk = min(k, len(bank))
    dist, nn = index.search(rec, kk)
    predicted = np.array([_majority(bank_y[row]) for row in nn], dtype=np.int64)
    if max_sq_distance is not None:
        predicted[dist[:, 0] > max_sq_distance] = -1
    return {"hits": predicted == y, "predicted": predicted, "nearest_public": nn[:, 0] >= n_priv,
            "nearest_sq_distance": np.maximum(dist[:, 0], 0).astype(np.float64), "nearest_index": nn[:, 0]}


def _majority(neighbour_labels: np.ndarray) -> int:
    # hand-written: scipy.stats.mode breaks ties by the smallest label, the kNN convention
    # breaks them by the nearest neighbour (labels arrive sorted by distance)
    labels, first, counts = np.unique(neighbour_labels, return_index=True, return_counts=True)
    best = counts == counts.max()
    return int(labels[best][np.argmin(first[best])])


def judge_agreement(*hits) -> dict[str, float]:
    """``all_accept``: share of reconstructions every judge accepts (the brief's agreement);
    ``disagree``: share on which the judges do not all give the same verdict.

    Example:
        >>> judge_agreement([1, 1, 0, 0], [1, 0, 0, 1])
        {'all_accept': 0.25, 'disagree': 0.5}
    """
    if not hits:
        raise ReAnalysisError("judge_agreement needs the hits of at least one judge")
    h = np.stack([np.asarray(_numpy(x), dtype=bool) for x in hits])
    if h.shape[1] == 0:
        return {"all_accept": float("nan"), "disagree": float("nan")}
    return {"all_accept": float(h.all(0).mean()), "disagree": float((h.any(0) & ~h.all(0)).mean())}


def accepted_prior_samples(target_pred, classes, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of the first ``per_class`` prior samples the target labels as each
    of ``classes`` (fewer where the target labels fewer samples so).

    Example:
        >>> accepted_prior_samples([1, 0, 1, 1, 2], classes=[1, 2], per_class=2)
        (array([0, 2, 4]), array([1, 1, 2]))
    """
    pred = _numpy(target_pred).astype(np.int64)
    idx, lab = [], []
    for c in classes:
        rows = np.flatnonzero(pred == int(c))[:per_class]
        idx.append(rows)
        lab.append(np.full(len(rows), int(c), dtype=np.int64))
    return np.concatenate(idx), np.concatenate(lab)


def chance_acceptance(target_pred, judge_pred, classes, per_class: int) -> dict[str, float]:
    """What an attack gets for free: of the unoptimised prior samples the target labels as
    each class (``per_class`` per class, as many as an attack's reconstructions), the share
    the judge also labels so. ``judge_pred`` is the judge's label for every sample.

    Example:
        >>> chance_acceptance([0, 0, 1, 1], [0, 5, 1, 1], classes=[0, 1], per_class=2)
        {'rate': 0.75, 'n': 4, 'classes_found': 2}
    """
    pred = _numpy(judge_pred).astype(np.int64)
    if len(pred) != len(_numpy(target_pred)):
        raise ReAnalysisError("target and judge predictions must cover the same prior samples")
    idx, lab = accepted_prior_samples(target_pred, classes, per_class)
    rate = float((pred[idx] == lab).mean()) if len(idx) else float("nan")
    return {"rate": rate, "n": int(len(idx)), "classes_found": int(len(np.unique(lab)))}


def judge_ceilings_of(results) -> dict[str, float]:
    """Judge name -> its mean acceptance of held-out private images over a study's runs
    (the ``ceiling_<judge>`` columns of ``results.csv``; judges without a value are left out).

    Example:
        >>> import pandas as pd
        >>> judge_ceilings_of(pd.DataFrame({"ceiling_top1": [0.5, 0.75], "ceiling_pixel": [None, None]}))
        {'top1': 0.625}
    """
    import pandas as pd

    values = {j.name: pd.to_numeric(results[j.ceiling], errors="coerce") for j in JUDGE_TABLE if j.ceiling in results}
    return {name: float(v.mean()) for name, v in values.items() if v.notna().any()}
