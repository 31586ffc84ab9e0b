"""The shared attack pipeline: prior -> initial latents (with selection where the attack
has it) -> optimisation -> final selection, returning an :class:`AttackResult`.

Attacks batch all target classes and restarts together, checkpoint their optimisation
state (latents and optimiser moments) every ``checkpoint_every`` iterations, and draw
every random number from a generator seeded by ``(seed, iteration)``, so a killed attack
resumes to the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..artifacts import load_state, save_state
from ..errors import ReAnalysisError
from ..models.frozen import frozen
from ..models.inputs import channels_last
from ..models.levers import lever, retain_freed_memory
from ..registry import Registry

ATTACKS = Registry("attack")


@dataclass
class AttackResult:
    """Reconstructions in normalised space [-1, 1], their target classes and latents."""

    images: torch.Tensor
    labels: torch.Tensor
    latents: torch.Tensor
    loss_history: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class LabelOnlyTarget:
    """Black-box, label-only access to a classifier: ``predict(x)`` returns class indices.

    It holds the model privately and exposes neither logits nor features: a label-only
    attack handed this object cannot read scores by accident.
    """

    def __init__(self, model: nn.Module):
        self.__model = model.eval()
        self.num_classes = model.num_classes
        self.queries = 0

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += len(x)
        return self.__model(x).argmax(1)


class Attack:
    """An MI attack. Subclasses set ``name``, ``prior_kind``, ``access`` and ``defaults``,
    and declare their fidelity: ``paper`` (citation), ``code`` (official repository),
    ``deviations`` (``(what differs, why)`` pairs that remain) and ``paper_budget`` (the
    paper's value of each budget parameter, e.g. ``{"iterations": 1500}``).

    ``defaults`` equal the paper's budget; :meth:`budget` reports what fraction of it a run
    used. String parameters list their allowed values in ``choices``.
    """

    name = "attack"
    prior_kind = "wgan-gp"  # which prior the attack needs (see attacks.priors)
    access = "logits"  # "logits" (white-box scores) or "label" (predicted label only)
    defaults: dict[str, Any] = {}
    choices: dict[str, tuple] = {}
    paper = ""
    code = ""
    deviations: tuple[tuple[str, str], ...] = ()
    paper_budget: dict[str, float] = {}

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ReAnalysisError(f"unknown parameter(s) {', '.join(sorted(unknown))} for attack {self.name!r}; "
                                  f"known: {', '.join(sorted(self.defaults)) or 'none'}")
        self.params = {**self.defaults, **params}
        self.given = dict(self.params)  # as asked; ``params`` may resolve None defaults at run time
        self.validate()

    def validate(self) -> None:
        for k, v in self.params.items():
            default = self.defaults[k]
            if k in self.choices:
                if v not in self.choices[k]:
                    raise ReAnalysisError(f"attack {self.name!r}: {k} must be one of "
                                          f"{', '.join(map(str, self.choices[k]))}, got {v!r}")
            elif default is None and v is None:
                continue
            elif default is None or (isinstance(default, (int, float)) and not isinstance(default, bool)):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v or v < 0:
                    raise ReAnalysisError(f"attack {self.name!r}: {k} must be a non-negative number, got {v!r}")

    def budget(self) -> dict[str, Any]:
        """Each budget parameter as run, the paper's value and their ratio, plus
        ``iterations_fraction`` (what ran / the paper's iterations)."""
        rows = {k: {"ran": self.params[k], "paper": p, "fraction": self.params[k] / p}
                for k, p in self.paper_budget.items() if self.params[k] is not None}  # None: resolved by run
        return {"iterations_fraction": rows["iterations"]["fraction"] if "iterations" in rows else None,
                "budget": rows}

    def prepare(self, target, prior, public_images: torch.Tensor, device: torch.device, seed: int,
                cache_dir: Path | None = None) -> None:
        """Build what the attack needs beyond target and prior (LOMMA's augmented models)."""

    def run(self, target, prior, labels: torch.Tensor, seed: int, state_path: Path | None = None,
            progress: bool = True) -> AttackResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


class LatentOptimizationAttack(Attack):
    """Gradient-based latent search, the loop GMI, KEDMI, LOMMA, PLG-MI and PPA share.

    Subclasses define ``init_latents``, ``make_optimizer``, ``loss`` and ``finalize``;
    ``setup`` runs first (resolving dataset-dependent parameters, building augmentations);
    ``lr_factor`` scales the learning rate per iteration (PPA's MultiStepLR).
    """

    defaults = {"iterations": 1500, "checkpoint_every": 100}

    def setup(self, target, prior, labels: torch.Tensor) -> None:
        """Called once at the start of :meth:`run`, before the latents are drawn."""

    def init_latents(self, labels, prior, seed, device) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def make_optimizer(self, latents: dict[str, torch.Tensor]) -> torch.optim.Optimizer:  # pragma: no cover
        raise NotImplementedError

    def loss(self, latents, labels, target, prior, it: int, gen: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def project(self, latents: dict[str, torch.Tensor]) -> None:
        """Constraint after each step (GMI clips z to [-1, 1])."""

    def lr_factor(self, it: int) -> float:
        """Learning-rate multiplier at iteration ``it`` (0-based): the optimiser's rate for that
        step is its initial rate times this factor (PPA's MultiStepLR). A function of ``it``
        only, so a resumed attack follows the same schedule."""
        return 1.0

    def finalize(self, latents, labels, target, prior, seed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (images, labels, latents) of the final reconstructions."""
        z = latents["z"].detach()
        with torch.no_grad():
            return prior.generator(z).float(), labels, z

    def run(self, target, prior, labels, seed, state_path=None, progress=True) -> AttackResult:
        if isinstance(target, LabelOnlyTarget):
            raise ReAnalysisError(f"attack {self.name!r} needs the target's logits; hand it the model itself")
        device = labels.device
        for p in list(target.parameters()) + list(prior.generator.parameters()) + list(prior.discriminator.parameters()):
            p.requires_grad_(False)
        target.eval(), prior.generator.eval(), prior.discriminator.eval()
        channels_last(target, prior.generator, prior.discriminator)  # faster convs, same values
        retain_freed_memory()
        target, prior = frozen_models(target, prior)
        self.setup(target, prior, labels)
        latents = {k: v.detach().clone().requires_grad_(True) for k, v in self.init_latents(labels, prior, seed, device).items()}
        opt = self.make_optimizer(latents)
        base_lrs = [group["lr"] for group in opt.param_groups]  # before a checkpoint's rates replace them
        start, history = 0, []
        if state_path is not None and Path(state_path).is_file():
            restored = load_state(state_path, {}, {"opt": opt})
            with torch.no_grad():
                for k, v in restored["tensors"].items():
                    latents[k].copy_(v.to(device))
            start, history = int(restored["meta"]["iteration"]), list(restored["meta"]["history"])
        iters, every = int(self.params["iterations"]), int(self.params["checkpoint_every"])
        bf16 = lever("bf16_search")  # reduced precision, off by default (models.levers)
        bar = tqdm(range(start, iters), desc=self.name, initial=start, total=iters, disable=not progress, leave=False)
        for it in bar:
            gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + it)
            for group, lr in zip(opt.param_groups, base_lrs):
                group["lr"] = lr * self.lr_factor(it)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = self.loss(latents, labels, target, prior, it, gen).float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                self.project(latents)
            history.append(float(loss.detach()))
            if it % 50 == 0:
                bar.set_postfix(loss=f"{history[-1]:.3f}")
            if state_path is not None and (it + 1) % every == 0 and it + 1 < iters:
                save_state(state_path, {k: v.detach() for k, v in latents.items()}, {"opt": opt},
                           {"iteration": it + 1, "history": history})
        images, out_labels, z = self.finalize(latents, labels, target, prior, seed)
        return AttackResult(images, out_labels, z, history, self.run_info())

    def run_info(self) -> dict[str, Any]:
        """What the run decided beyond its images (e.g. GMI's selected restarts)."""
        return {}


def frozen_models(target, prior):
    """The target and the prior as the latent search reads them: frozen copies with the levers
    that are on (:func:`re_analysis.models.frozen.frozen`: the same function in fewer
    operations), channels_last; the models handed in are left as they are. With no lever on,
    the models themselves."""
    if not lever("fold_batchnorm"):
        return target, prior
    if prior is None:
        return channels_last(frozen(target)), None
    import dataclasses

    generator, discriminator = (channels_last(frozen(m)) for m in (prior.generator, prior.discriminator))
    try:
        prior = dataclasses.replace(prior, generator=generator, discriminator=discriminator)
    except TypeError:  # a prior-like object of a user's, not the Prior dataclass
        import copy

        prior = copy.copy(prior)
        prior.generator, prior.discriminator = generator, discriminator
    return channels_last(frozen(target)), prior


def register_attack(name: str):
    """Register an :class:`Attack` subclass under ``name`` (timm-style registry)."""

    def deco(cls):
        cls.name = name
        return ATTACKS.register(name)(cls)

    return deco


def list_attacks() -> list[str]:
    return ATTACKS.names()


def attack_info() -> dict[str, str]:
    return ATTACKS.info()


def create_attack(name: str, **params: Any) -> Attack:
    return ATTACKS.get(name)(**params)


def attack_class(name: str) -> type[Attack]:
    return ATTACKS.get(name)


def per_class_seeds(labels: torch.Tensor, seed: int, shape: tuple[int, ...], device) -> torch.Tensor:
    """Normal draws where the r-th row of class k depends only on (seed, k, r): the same start
    whatever the chunking of classes and the number of restarts (each row draws on its own,
    since torch's randn fills a larger tensor by another path than a single row)."""
    out = torch.empty((len(labels), *shape), device=device)
    for k in labels.unique().tolist():
        rows = (labels == k).nonzero().squeeze(1)
        for r, row in enumerate(rows.tolist()):
            g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 7919 * (int(k) + 1) + 104_729 * r)
            out[row] = torch.randn(shape, device=device, generator=g)
    return out
