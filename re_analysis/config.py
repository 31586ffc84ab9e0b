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
# (VGG16 target, FaceNet64 evaluation), MIDRE's ResNet-18 at 224 px, small CNNs at 28 px.
DEFAULT_ARCH = {
    "target": {28: "cnn28", 64: "vgg16", 224: "resnet18"},
    "eval": {28: "lenet28", 64: "facenet64", 224: "resnet18"},
}


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
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        object.__setattr__(self, "defense_params", dict(self.defense_params))
        object.__setattr__(self, "dataset_params", dict(self.dataset_params))

    def resolved(self) -> "TrainConfig":
        """Fill ``image_size`` and ``arch`` from the dataset's defaults."""
        if self.arch is not None and self.image_size is not None:
            return self
        from .data import default_image_size  # local: configs stay light to import

        size = self.image_size or default_image_size(self.dataset)
        return dataclasses.replace(self, image_size=size, arch=self.arch or default_arch(self.role, size))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        if not d["dataset_params"]:
            d.pop("dataset_params")  # keeps the hashes of runs made before the field existed
        d.pop("device")  # where it ran does not change what it is (CPU/GPU numerics aside)
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
