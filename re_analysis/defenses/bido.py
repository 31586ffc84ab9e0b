"""BiDO — "Bilateral Dependency Optimization: Defending Against Model-inversion Attacks",
Peng et al., KDD 2022; official code ``AlanPeng0897/Defend_MI`` (``BiDO/hsic.py``,
``BiDO/engine.py``).

Loss = CE + lambda_x * sum_l D(x, z_l) - lambda_y * sum_l D(y, z_l) over the hidden
representations z_l: the output of every downsampling stage of the body and the penultimate
features (a stage that the features merely flatten, such as VGG16's last block, counts once,
as the features). The dependence D is the official estimator:

- ``bido`` (BiDO-HSIC): ``hsic_normalized_cca``, tr(Rx Ry) with R = K~ (K~ + eps m I)^-1,
  K~ = K H the right-centred kernel matrix, eps = 1e-5, m the batch size;
- ``bido-coco`` (BiDO-COCO): ``coco_normalized_cca``, sqrt(||K^ L^||_F) / m with
  K^ = H K H.

Kernels as in the official code: Gaussian exp(-|xi - xj|^2 / (2 sigma^2 d)) with sigma = 5 and
d the flattened dimension for inputs and hidden layers; linear on one-hot labels. The input
kernel reads pixels in [0, 1], as the official loaders hand them (``ToTensor`` without
``Normalize``), not the normalised [-1, 1] inputs the network sees.

Weights (lambda_x, lambda_y) per measure and dataset (``paper_weights``, resolved by
:func:`~re_analysis.defenses.base.official_weight`), from the official README: HSIC on
CelebA (0.05, 0.5), COCO on MNIST (1, 50). Where the official code gives none, the only
official setting of the same measure, declared in ``deviations``: HSIC everywhere takes
the CelebA weights (no official HSIC setting for digits or fonts), COCO everywhere the
MNIST weights. The weights a run used, and their source, are recorded in its
``defense_params``.

Example:
    >>> import torch
    >>> from re_analysis.defenses.bido import gaussian_kernel, hsic_normalized_cca
    >>> x = torch.randn(16, 5, dtype=torch.float64)
    >>> k = gaussian_kernel(x, 5.0)
    >>> bool(hsic_normalized_cca(k, k) > hsic_normalized_cca(k, gaussian_kernel(torch.randn(16, 5, dtype=torch.float64), 5.0)))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import unwrap
from ..errors import ReAnalysisError
from .base import Defense, official_weight, register_defense

EPSILON = 1e-5  # the official estimator's ridge, times the batch size

def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances of the rows of ``x`` (flattened)."""
    x = x.flatten(1)
    r = (x * x).sum(1, keepdim=True)
    return (r - 2 * x @ x.T + r.T).clamp_min(0)


def gaussian_kernel(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-|xi - xj|^2 / (2 sigma^2 d)), d = the flattened dimension (BiDO's scaling)."""
    return torch.exp(-squared_distances(x) / (2 * sigma * sigma * x.flatten(1).shape[1]))


def linear_kernel(x: torch.Tensor) -> torch.Tensor:
    """x x^T (BiDO's label kernel on one-hot labels)."""
    x = x.flatten(1)
    return x @ x.T


def centering(m: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(m, device=like.device, dtype=like.dtype) - 1.0 / m


def hsic_normalized_cca(k: torch.Tensor, l: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """BiDO-HSIC's dependence: tr(Rk Rl), R = K~ (K~ + eps m I)^-1, K~ = K H.

    K~ and K~ + eps m I commute, so R is computed by one linear solve instead of an explicit
    inverse (the same number, better conditioned).
    """
    m = k.shape[0]
    h, eye = centering(m, k), torch.eye(m, device=k.device, dtype=k.dtype)
    kc, lc = k @ h, l @ h
    rk = torch.linalg.solve(kc + eps * m * eye, kc)
    rl = torch.linalg.solve(lc + eps * m * eye, lc)
    return (rk * rl.T).sum()


def coco_normalized_cca(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """BiDO-COCO's dependence: sqrt(||(H K H)(H L H)||_F) / m."""
    m = k.shape[0]
    h = centering(m, k)
    # sqrt(Frobenius norm) written as (sum of squares)^(1/4), floored at a tiny value: a batch of
    # one class has a zero centred label kernel, where the official sqrt(norm) has no gradient (NaN)
    return (h @ k @ h @ h @ l @ h).square().sum().clamp_min(1e-30).pow(0.25) / m


ESTIMATORS = {"hsic": hsic_normalized_cca, "coco": coco_normalized_cca}


def downsamples(module: nn.Module) -> bool:
    return any(isinstance(c, (nn.Conv2d, nn.MaxPool2d)) and _first(c.stride) == 2 for c in module.modules())


def _first(v) -> int:
    return v[0] if isinstance(v, tuple) else v


def hidden_stages(model: nn.Module) -> list[nn.Module]:
    """Modules whose outputs are BiDO's hidden representations (before the features).

    - torchvision ResNets: the four residual stages (``layer1``-``layer4``);
    - plain conv nets (VGG, the small CNNs): every max-pool, i.e. the end of each block;
    - residual stacks without pools (IR nets): the last unit of each resolution.
    """
    from torchvision.models import ResNet

    inner = unwrap(model)
    body = getattr(inner, "body", None) or getattr(getattr(inner, "base", None), "body", None) or inner
    if isinstance(body, ResNet):
        return [body.layer1, body.layer2, body.layer3, body.layer4]
    pools = [m for m in body.modules() if isinstance(m, nn.MaxPool2d) and _first(m.kernel_size) != 1]
    if pools:
        return pools
    units = list(body.children())
    starts = [i for i, u in enumerate(units) if downsamples(u)]
    return [units[i - 1] for i in starts[1:] if i > 0] + units[-1:]


class BiDODefense(Defense):
    """Bilateral dependency optimisation (KDD 2022) with the official dependence estimators."""

    paper = "Peng et al., Bilateral Dependency Optimization: Defending Against Model-inversion Attacks, KDD 2022"
    code = "https://github.com/AlanPeng0897/Defend_MI"
    deviations = (
        ("hidden representations are the stage outputs of our architectures plus the features (VGG16: the four "
         "first blocks and the features, as officially; ResNet: the four stages, not every residual unit)",
         "the official code lists layers by hand for its own VGG16/MCNN/ResNet classes"),
        ("trained with the suite's optimiser recipe (Adam, step decay) and from random initialisation",
         "every target shares one recipe so that defenses are not confounded with optimisers; the official "
         "VGG16 starts from ImageNet weights, which cannot be downloaded here"),
        ("HSIC weights (lambda_x, lambda_y) = (0.05, 0.5), the official CelebA setting, on every dataset "
         "(glyphs, digits, Fashion-MNIST, FaceScrub)",
         "the official code gives HSIC weights for CelebA only (its MNIST setting is COCO's); fonts are "
         "identities as faces are; each run records its weights and their source in defense_params"),
    )
    measure = "hsic"
    paper_weights = {"lambda_x": {"celeba": 0.05}, "lambda_y": {"celeba": 0.5}}  # Defend_MI README (GMI, KED-MI)
    loss_mixes_samples = True  # the kernel matrices couple the batch: no per-sample gradients (DP-SGD)

    def __init__(self, lambda_x: float | None = None, lambda_y: float | None = None, sigma: float = 5.0):
        for k, v in (("lambda_x", lambda_x), ("lambda_y", lambda_y), ("sigma", sigma)):
            if v is None and k != "sigma":
                continue  # the dataset's official (or nearest official) weight, resolved by check()
            if not isinstance(v, (int, float)) or v < 0 or (k == "sigma" and v == 0):
                raise ReAnalysisError(f"{self.name} {k} must be a {'positive' if k == 'sigma' else 'non-negative'} number, got {v!r}")
        self.given = {"lambda_x": lambda_x, "lambda_y": lambda_y}
        self.lambda_x, self.lambda_y, self.sigma = lambda_x, lambda_y, float(sigma)
        self.params = {"lambda_x": lambda_x, "lambda_y": lambda_y, "sigma": self.sigma}
        self.reset_stats()

    def check(self, splits) -> None:
        """Resolve weights left to the dataset (official or nearest official) and record their source."""
        self.params = {"sigma": self.sigma}
        for k in ("lambda_x", "lambda_y"):
            value, source = ((self.given[k], "given") if self.given[k] is not None
                             else official_weight(self, k, splits))
            setattr(self, k, float(value))
            self.params.update({k: float(value), f"{k}_source": source})

    def reset_stats(self):
        self.sums: dict[str, torch.Tensor | float] = {"input": 0.0, "label": 0.0}
        self.layer_sums: list[torch.Tensor] | None = None
        self.batches_seen = 0

    def hidden(self, model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(hidden representations, logits) of ``x``: stage outputs and the features."""
        acts: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _i, out: acts.append(out)) for m in hidden_stages(model)]
        try:
            inner = unwrap(model)
            feats = inner.features(x)
            logits = inner.head(feats)
        finally:
            for h in handles:
                h.remove()
        if acts and acts[-1][0].numel() == feats[0].numel():
            acts = acts[:-1]  # the features only flatten (and normalise) the last stage: count it once
        return acts + [feats], logits

    def dependences(self, x: torch.Tensor, y: torch.Tensor, hiddens: list[torch.Tensor],
                    num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer dependences (D(x, z_l), D(y, z_l)) as two 1-d tensors, in float32."""
        estimator = ESTIMATORS[self.measure]
        with torch.autocast(device_type=x.device.type, enabled=False):
            kx = gaussian_kernel(x.float() * 0.5 + 0.5, self.sigma)  # pixels in [0, 1], as the official loader
            ky = linear_kernel(F.one_hot(y, num_classes).float())
            dx, dy = [], []
            for z in hiddens:
                kz = gaussian_kernel(z.float(), self.sigma)
                dx.append(estimator(kz, kx))
                dy.append(estimator(kz, ky))
        return torch.stack(dx), torch.stack(dy)

    def loss(self, model, x, y, epoch):
        if self.lambda_x is None or self.lambda_y is None:
            raise ReAnalysisError(f"{self.name}: call check(splits) first, it resolves the dataset's weights")
        hiddens, logits = self.hidden(model, x)
        dx, dy = self.dependences(x, y, hiddens, logits.shape[1])
        self.record(dx.detach(), dy.detach())
        return F.cross_entropy(logits, y) + self.lambda_x * dx.sum() - self.lambda_y * dy.sum(), logits

    def record(self, dx: torch.Tensor, dy: torch.Tensor) -> None:
        self.sums["input"] = self.sums["input"] + dx.sum()
        self.sums["label"] = self.sums["label"] + dy.sum()
        per_layer = torch.stack([dx, dy])
        self.layer_sums = per_layer if self.layer_sums is None else self.layer_sums + per_layer
        self.batches_seen += 1

    def epoch_stats(self):
        """Mean over the epoch's batches of sum_l D(x, z_l) and sum_l D(y, z_l) (the two terms of
        the loss), and of each layer's pair."""
        if not self.batches_seen:
            return {}
        n = self.batches_seen
        key = f"bido_{self.measure}"
        out = {f"{key}_input": float(self.sums["input"]) / n, f"{key}_label": float(self.sums["label"]) / n,
               f"{key}_input_layers": [float(v) / n for v in self.layer_sums[0]],
               f"{key}_label_layers": [float(v) / n for v in self.layer_sums[1]]}
        self.reset_stats()
        return out


@register_defense("bido", "BiDO-HSIC: penalise HSIC(input, hidden), reward HSIC(label, hidden) (Peng et al., KDD 2022)")
class BiDOHSICDefense(BiDODefense):
    """BiDO-HSIC: the normalised-HSIC estimator ``hsic_normalized_cca`` (KDD 2022)."""

    measure = "hsic"


@register_defense("bido-coco", "BiDO-COCO: the constrained-covariance variant of BiDO (Peng et al., KDD 2022)")
class BiDOCOCODefense(BiDODefense):
    """BiDO-COCO: the constrained-covariance estimator ``coco_normalized_cca`` (KDD 2022)."""

    measure = "coco"
    paper_weights = {"lambda_x": {"mnist": 1.0}, "lambda_y": {"mnist": 50.0}}  # Defend_MI README (KED-MI, MNIST)
    deviations = BiDODefense.deviations + (
        ("COCO is computed whenever bido-coco is chosen",
         "the official train_HSIC.py takes --measure=COCO but never passes it to its training loop, which then "
         "uses HSIC"),
        ("COCO weights (lambda_x, lambda_y) = (1, 50), the official MNIST setting (README, KED-MI), on every "
         "dataset; DMI/recovery.py also lists (2, 20)",
         "the official code gives COCO weights for MNIST only; glyphs and faces take them as the nearest"),
    )
