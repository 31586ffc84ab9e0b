"""Frozen, validated configs; ``to_dict()`` is what gets hashed into a run directory's key.

Example:
    >>> from re_analysis.config import TrainConfig
    >>> cfg = TrainConfig(dataset="mnist5k", defense="random-erasing", seed=1)
    >>> cfg.resolved().arch
    'cnn28'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ReAnalysisError

ROLES = ("target", "eval")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")

# Default architectures by role and image size: the MI literature's choices at 64 px
# (VGG16 target, FaceNet64 evaluation), MIDRE's ResNet-18 target and PPA/MIDRE's
# Inception-v3 evaluation model at 224 px, a small CNN target and a pre-activation ResNet
# evaluation model at 28-32 px. The evaluation model is never the target's architecture.
DEFAULT_ARCH = {
    "target": {28: "cnn28", 64: "vgg16", 224: "resnet18"},
    "eval": {28: "preresnet8", 64: "facenet64", 224: "inception-v3"},
}

# The robust judge's PGD budget (Madry et al., ICLR 2018), eps in pixel units of [0, 1].
# Madry et al. train MNIST at eps 0.3 with 40 steps; a CPU budget allows few steps, so the
# suite trains at eps 0.1 with 3 steps of 2.5 * eps / 3 and reports the judge's clean and
# PGD-10 accuracy with every result. Pass ``adversarial={...}`` to change it.
ROBUST_EVAL = {"eps": 0.1, "steps": 3}
ADVERSARIAL_KEYS = ("eps", "steps", "step_size")


def default_arch(role: str, image_size: int) -> str:
    sizes = sorted(DEFAULT_ARCH[role])
    best = min(sizes, key=lambda s: abs(s - image_size))
    return DEFAULT_ARCH[role][best]


def parse_value(text: str) -> Any:
    """Parse a ``key=value`` right-hand side: YAML scalars/lists, and ``a,b`` as a list."""
    if "," in text and not text.strip().startswith("["):
        return [parse_value(t) for t in text.split(",")]
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["scale=0.1,0.8", "p=0.5"]`` -> ``{"scale": [0.1, 0.8], "p": 0.5}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ReAnalysisError(f"parameter {item!r} is not key=value; write it like scale=0.1,0.8")
        key, val = item.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(val.strip())
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained classifier.

    Recipe defaults (Adam, lr 1e-3, step decay at 75% and 90% of the epochs, gamma 0.1)
    scale down the MIDRE official recipe (Adam 1e-3, 100 epochs, MultiStepLR at 75/90);
    the epoch count and batch size default to a smoke-size run on ``mnist5k``.
    ``init_from`` (a finished run directory of the same architecture and classes) starts
    from that run's weights instead of a random initialisation: fine-tuning, e.g. the robust
    judge's adversarial fine-tuning of the natural one.
    """

    dataset: str = "mnist5k"
    root: str | None = None
    image_size: int | None = None
    dataset_params: dict = field(default_factory=dict)
    arch: str | None = None
    role: str = "target"
    defense: str = "none"
    defense_params: dict = field(default_factory=dict)
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    milestones: tuple = (0.75, 0.9)
    gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    open_set: bool | None = None
    adversarial: dict = field(default_factory=dict)
    init_from: str | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ReAnalysisError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ReAnalysisError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ReAnalysisError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ReAnalysisError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ReAnalysisError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ReAnalysisError(f"lr must be a positive number, got {self.lr!r}")
        if any(not 0 < m <= 1 for m in self.milestones):
            raise ReAnalysisError(f"milestones are fractions of the epochs in (0, 1], got {self.milestones}")
        if self.role == "eval" and self.defense != "none":
            raise ReAnalysisError("the evaluation model is trained without a defense; drop --defense or use --role target")
        self._check_judge_options()
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        object.__setattr__(self, "defense_params", dict(self.defense_params))
        object.__setattr__(self, "dataset_params", dict(self.dataset_params))
        object.__setattr__(self, "adversarial", dict(self.adversarial))

    def _check_judge_options(self) -> None:
        """``open_set`` and ``adversarial`` belong to the evaluation model (the judge)."""
        if self.role == "target" and (self.open_set or self.adversarial):
            raise ReAnalysisError("open_set and adversarial are options of the evaluation model (--role eval); "
                                  "a target trains on its private classes only")
        if self.open_set not in (None, True, False):
            raise ReAnalysisError(f"open_set must be true or false, got {self.open_set!r}")
        if self.adversarial:
            from .adversarial import check_budget  # local: configs stay light to import

            unknown = set(self.adversarial) - set(ADVERSARIAL_KEYS)
            if unknown:
                raise ReAnalysisError(f"unknown adversarial option(s) {', '.join(sorted(unknown))}; "
                                      f"known: {', '.join(ADVERSARIAL_KEYS)} (eps in pixel units of [0, 1])")
            a = self.adversarial
            check_budget(a.get("eps", ROBUST_EVAL["eps"]), a.get("steps", ROBUST_EVAL["steps"]), a.get("step_size"))

    def resolved(self) -> "TrainConfig":
        """Fill ``image_size`` and ``arch`` from the dataset's defaults; an evaluation model
        is open-set (it also learns the public classes) unless told otherwise."""
        open_set = (self.role == "eval") if self.open_set is None else self.open_set
        adversarial = {**ROBUST_EVAL, **self.adversarial} if self.adversarial else {}
        if self.arch is not None and self.image_size is not None:
            return dataclasses.replace(self, open_set=open_set, adversarial=adversarial)
        from .data import default_image_size  # local: configs stay light to import

        size = self.image_size or default_image_size(self.dataset)
        return dataclasses.replace(self, image_size=size, arch=self.arch or default_arch(self.role, size),
                                   open_set=open_set, adversarial=adversarial)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        if not d["dataset_params"]:
            d.pop("dataset_params")  # keeps the hashes of runs made before the field existed
        d.pop("device")  # where it ran does not change what it is (CPU/GPU numerics aside)
        for key in ("open_set", "adversarial", "init_from"):  # off by default: keeps the hashes of targets
            if not d[key]:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ReAnalysisError(f"unknown training option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)
