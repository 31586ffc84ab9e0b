"""Attackers' GAN priors trained on the PUBLIC split, cached like models.

- ``wgan-gp``: GMI's prior (Zhang et al., CVPR 2020; official AI-secure/GMI-Attack):
  WGAN-GP, Adam lr 2e-4, betas (0.5, 0.999), 5 critic steps per generator step,
  gradient-penalty weight 10. Independent of the target: trained once per public split
  and seed and shared.
- ``kedmi``: KEDMI's inversion-specific GAN (Chen et al., ICCV 2021; official
  SCccc21/Knowledge-Enriched-DMI ``k+1_gan.py``): the discriminator has one output per
  TARGET class and a minibatch-discrimination layer; per discriminator step it learns the
  target's soft labels on one public batch (soft cross-entropy) and the semi-supervised
  real/fake term of Salimans et al. (2016) on a second public batch and the fakes; every
  5th step the generator matches the discriminator's mean features of a third public
  batch, plus 1e-4 times the entropy of the discriminator's class prediction of fakes,
  SUMMED over the batch.
- ``plg``: PLG-MI's conditional GAN (Yuan et al., AAAI 2023; official LetheSec/PLG-MI-Attack
  ``train_cgan.py``): the public images the target is most confident about become
  pseudo-labelled per target class (top-``n`` per class); a class-conditional-BN generator
  and a spectral-norm projection discriminator train with the hinge loss, Adam 2e-4,
  betas (0, 0.9); each iteration is one generator step (hinge + ``alpha`` x the target's
  max-margin loss on augmented fakes, alpha 0.2) followed by 5 discriminator steps.

Budgets: ``PriorConfig.steps=None`` trains each kind for its paper's budget
(:data:`PAPER_BUDGETS`), converted to generator steps for the public split at hand; a
smaller ``steps`` is recorded as ``steps_fraction`` in ``prior.json``.

Quality: a seeded ``heldout_fraction`` of the public split is kept out of training, so
that :func:`re_analysis.attacks.quality.prior_quality` can compare samples with public
images the prior never saw: per class on category datasets (digits), whole identities on
identity datasets (fonts, faces: ``register_dataset(identities=True)``), where images of a
trained identity are near copies in a judge's features.

Each prior run writes ``generator.safetensors``, ``discriminator.safetensors`` and
``prior.json``; a checkpoint every ``checkpoint_every`` steps makes it resumable.

Example:
    >>> paper_steps("wgan-gp", n_public=2000)  # GMI: 100 epochs of 32 batches, G every 5th
    640
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..artifacts import (atomic_save_tensors, atomic_write_json, claim_run_dir, claim_scope, config_hash,
                         environment_versions, load_state, load_tensors, read_json, remove_artifact, save_state)
from ..data import load_dataset, materialize
from ..data.registry import class_split, stratified_split
from ..errors import ReAnalysisError
from ..models.inputs import autocast, normalize, predict_logits, resolve_device
from ..training import data_key
from .augment import plg_augmentation
from .gan import Discriminator, Generator, SNProjectionDiscriminator

PRIOR_KINDS = ("wgan-gp", "kedmi", "plg")
PRIOR_FORMAT = 2  # raised when the GAN architectures change: a cached prior of another format is not reused

PAPER_BUDGETS: dict[str, dict[str, Any]] = {
    "wgan-gp": {"epochs": 100, "source": "GMI official MNIST/MNIST.json and train_gan.py: 100 epochs of batches "
                                         "of 64, one generator step every 5th batch"},
    "kedmi": {"epochs": 120, "source": "KEDMI official config/celeba.json and k+1_gan.py: 120 epochs of batches "
                                       "of 64, one generator step every 5th batch"},
    "plg": {"steps": 30_000, "source": "PLG-MI official train_cgan.py: --max_iteration 30000 generator "
                                       "iterations, each followed by 5 discriminator steps"},
}
# Every prior here trains on a part of the public split: the rest is held out to check the
# prior before it is attacked with (attacks.quality). The official GMI, KEDMI and PLG-MI train
# their GANs on all of their public data, so each prior-based attack declares this.
HELDOUT_DEVIATION = (
    "the GAN prior trains on 80% of the public split (heldout_fraction 0.2; on identity datasets a fifth "
    "of the public identities, whole); official: all public data",
    "the held-out part checks the prior's quality before any attack uses it (FID against unseen public "
    "images, attacks.quality); a prior that only memorised its training images would pass a check on them",
)
KIND_Z_DIM = {"wgan-gp": 100, "kedmi": 100, "plg": 128}  # GMI/KEDMI: 100; PLG-MI: --gen_dim_z 128


def paper_steps(kind: str, n_public: int, batch_size: int = 64, n_critic: int = 5) -> int:
    """Generator steps of ``kind``'s paper budget on ``n_public`` training images.

    GMI and KEDMI count epochs of discriminator batches (a generator step every
    ``n_critic``-th batch); PLG-MI counts generator iterations directly.
    """
    budget = PAPER_BUDGETS[kind]
    if "steps" in budget:
        return int(budget["steps"])
    batches = budget["epochs"] * math.ceil(n_public / batch_size)
    return max(1, math.ceil(batches / n_critic))


@dataclass(frozen=True)
class PriorConfig:
    """What determines a prior. ``steps=None``: the paper's budget; ``target_hash`` ties
    KEDMI/PLG priors to their target; ``z_dim=None``: the kind's own (100, or 128 for PLG)."""

    kind: str = "wgan-gp"
    dataset: str = "mnist5k"
    root: str | None = None
    image_size: int | None = None
    dataset_params: dict = field(default_factory=dict)
    seed: int = 0
    steps: int | None = None
    batch_size: int = 64
    z_dim: int | None = None
    dim: int | None = None
    lr: float = 2e-4
    n_critic: int = 5
    gp_weight: float = 10.0
    top_n: int = 200
    alpha: float = 0.2
    entropy_weight: float = 1e-4
    minibatch_features: int = 64
    heldout_fraction: float = 0.2
    target_hash: str | None = None
    checkpoint_every: int = 50

    def __post_init__(self):
        if self.kind not in PRIOR_KINDS:
            raise ReAnalysisError(f"unknown prior kind {self.kind!r}; choose one of {', '.join(PRIOR_KINDS)}")
        for name in ("batch_size", "n_critic", "top_n", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ReAnalysisError(f"prior {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("steps", "z_dim"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ReAnalysisError(f"prior {name} must be a positive integer (or None for the default), "
                                      f"got {getattr(self, name)!r}")
        if not 0 < self.heldout_fraction < 1:
            raise ReAnalysisError(f"heldout_fraction must lie in (0, 1), got {self.heldout_fraction!r}")
        if self.kind != "wgan-gp" and not self.target_hash:
            raise ReAnalysisError(f"a {self.kind} prior is trained against a target: pass the target run")

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("checkpoint_every")
        if not d["dataset_params"]:
            d.pop("dataset_params")
        if self.kind != "kedmi":
            d.pop("entropy_weight"), d.pop("minibatch_features")
        if self.kind != "plg":
            d.pop("top_n"), d.pop("alpha")
        if self.kind != "wgan-gp":
            d.pop("gp_weight")
        d["format"] = PRIOR_FORMAT
        return d


@dataclass
class Prior:
    """A trained prior: generator, discriminator and how they were made (``info``)."""

    kind: str
    generator: Generator
    discriminator: torch.nn.Module
    info: dict[str, Any]
    run_dir: Path | None = None

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    @property
    def hflip(self) -> bool:
        """Whether a horizontal flip keeps the labels of the prior's dataset."""
        return bool(self.info.get("hflip_preserves_labels", False))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images from N(0, I) latents (class-conditional priors need ``labels``)."""
        dev = next(self.generator.parameters()).device
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
        self.generator.eval()
        out = [self.generator(z[i:i + 256], None if labels is None else labels[i:i + 256].to(dev))
               for i in range(0, n, 256)]
        return torch.cat(out).float().cpu()


def gan_width(cfg: PriorConfig, image_size: int) -> int:
    """Base width: GMI's 64 at 64 px and above; 32 at 28/32 px (4x cheaper on a CPU)."""
    return cfg.dim or (32 if image_size <= 32 else 64)


def build_gan(cfg: PriorConfig, channels: int, image_size: int, num_target_classes: int):
    dim = gan_width(cfg, image_size)
    z_dim = cfg.z_dim or KIND_Z_DIM[cfg.kind]
    if cfg.kind == "plg":
        return (Generator(image_size, channels, z_dim, dim, num_classes=num_target_classes),
                SNProjectionDiscriminator(image_size, channels, dim, num_classes=num_target_classes))
    g = Generator(image_size, channels, z_dim, dim)
    if cfg.kind == "kedmi":
        return g, Discriminator(image_size, channels, dim, out_dim=num_target_classes,
                                minibatch_features=cfg.minibatch_features)
    return g, Discriminator(image_size, channels, dim, out_dim=1)


def prior_optimizers(cfg: PriorConfig, g, d, fused: bool = True):
    """Adam for generator and discriminator with the kind's betas (PLG-MI: (0, 0.9); GMI and
    KEDMI: (0.5, 0.999)). ``fused``: one kernel per step instead of one per operation, the same
    update; KEDMI's step 1.32x faster on one CPU core (benchmarks/RESULTS.md)."""
    betas = (0.0, 0.9) if cfg.kind == "plg" else (0.5, 0.999)
    return (torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=betas, fused=fused),
            torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=betas, fused=fused))


def split_public(public_labels: torch.Tensor, heldout_fraction: float, seed: int,
                 by_identity: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of the public split: (train indices, held-out indices); per class, or with
    ``by_identity`` a ``heldout_fraction`` of the public classes held out whole."""
    split = class_split if by_identity else stratified_split
    train, heldout = split(public_labels.numpy(), heldout_fraction, seed)
    return torch.from_numpy(train), torch.from_numpy(heldout)


def public_parts(cfg: PriorConfig):
    """(splits, public training images, held-out public images) of a prior's config."""
    splits = load_dataset(cfg.dataset, root=cfg.root, seed=cfg.seed, image_size=cfg.image_size, **cfg.dataset_params)
    images, labels = materialize(splits.public)
    train, heldout = split_public(labels, cfg.heldout_fraction, cfg.seed, by_identity=splits.labels_are_identities)
    return splits, images[train], images[heldout]


def heldout_public(prior: Prior) -> torch.Tensor:
    """The public images (uint8) ``prior`` never trained on, for :func:`prior_quality`."""
    return public_parts(PriorConfig(**config_from_info(prior.info)))[2]


def config_from_info(info: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(info["config"])
    if cfg.pop("format", None) != PRIOR_FORMAT:
        raise ReAnalysisError("this prior was trained by an older version of re_analysis (other GAN architectures); "
                              "delete its folder (or drop --prior) to train a new one")
    return cfg


def gradient_penalty(d, real, fake, generator=None):
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(d(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def max_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PLG-MI's max-margin loss: -(z_y - max_{j != y} z_j), averaged."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return (other - own).mean()


def pseudo_label(target, public_images: torch.Tensor, num_classes: int, top_n: int):
    """PLG-MI's top-n selection: for each target class, the ``top_n`` public images with the
    highest target confidence for it (an image may serve several classes)."""
    probs = predict_logits(target, public_images).softmax(1)
    xs, ys = [], []
    for k in range(num_classes):
        idx = probs[:, k].argsort(descending=True)[:top_n]
        xs.append(public_images[idx])
        ys.append(torch.full((len(idx),), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def resolve_steps(cfg: PriorConfig, n_public: int) -> tuple[PriorConfig, int]:
    """(config with ``steps`` resolved to a number, the paper's steps)."""
    paper = paper_steps(cfg.kind, n_public, cfg.batch_size, cfg.n_critic)
    return replace(cfg, steps=cfg.steps or paper), paper


@claim_scope()  # the prior's run directory stays locked until it is trained
def train_prior(cfg: PriorConfig, out_dir: str | Path | None = None, target=None,
                cache_root: str | Path = "runs", device: str = "auto", progress: bool = True) -> Prior:
    """Train (or reuse) the prior ``cfg`` describes on the public split (less its held-out part).

    Example:
        >>> prior = train_prior(PriorConfig(steps=10), cache_root="runs/priors")  # doctest: +SKIP
        >>> prior.info["steps_fraction"]  # doctest: +SKIP
        0.015625
    """
    if cfg.kind != "wgan-gp" and target is None:
        raise ReAnalysisError(f"a {cfg.kind} prior needs the target model (it learns from the target's outputs)")
    splits, public, heldout = public_parts(cfg)
    cfg, paper = resolve_steps(replace(cfg, image_size=splits.image_size), len(public))
    key = {**cfg.key(), **data_key(splits)}  # priors on other data (font versions) are never reused
    if splits.labels_are_identities:  # trained without its held-out identities (category datasets: unchanged key)
        key["heldout_by"] = "identity"
    run_dir = Path(out_dir) if out_dir else Path(cache_root) / f"prior-{cfg.kind}-{config_hash(key)}"
    dev = resolve_device(device)
    claim_run_dir(run_dir, key, kind="prior")
    if (run_dir / "prior.json").is_file():
        return load_prior(run_dir, dev)

    num_target = splits.num_classes
    torch.manual_seed(cfg.seed)
    g, d = build_gan(cfg, splits.channels, splits.image_size, num_target)
    g, d = g.to(dev), d.to(dev)
    opt_g, opt_d = prior_optimizers(cfg, g, d)
    batch = {"public": public.to(dev), "soft": None, "labels": None, "augment": None, "target": None}
    if target is not None:
        target = target.to(dev).eval()
        for p in target.parameters():
            p.requires_grad_(False)
        batch["target"] = target
    if cfg.kind == "kedmi":
        batch["soft"] = predict_logits(target, public).softmax(1).to(dev)
    if cfg.kind == "plg":
        images, labels = pseudo_label(target, public, num_target, cfg.top_n)
        batch["public"], batch["labels"] = images.to(dev), labels.to(dev)
        batch["augment"] = plg_augmentation(splits.image_size, splits.channels, splits.hflip_preserves_labels,
                                            jitter_p=0.5)

    ckpt = run_dir / "checkpoint.safetensors"
    start, history = 0, []
    if ckpt.is_file():
        meta = load_state(ckpt, {"g": g, "d": d}, {"g": opt_g, "d": opt_d})["meta"]
        start, history = int(meta["step"]), list(meta["history"])
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc=f"prior {cfg.kind}", initial=start, total=cfg.steps,
               disable=not progress, leave=False)
    for step in bar:
        gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1_000_003 + step)
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        stats = STEP[cfg.kind](cfg, g, d, opt_g, opt_d, batch, gen, dev)
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step + 1, **stats})
            bar.set_postfix(**{k: f"{v:.3f}" for k, v in stats.items()})
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_state(ckpt, {"g": g, "d": d}, {"g": opt_g, "d": opt_d}, {"step": step + 1, "history": history})

    info = {"kind": cfg.kind, "config": cfg.key(), "image_size": splits.image_size, "channels": splits.channels,
            "num_target_classes": num_target, "hflip_preserves_labels": bool(splits.hflip_preserves_labels),
            "steps": cfg.steps, "paper_steps": paper, "steps_fraction": cfg.steps / paper,
            "paper_budget": PAPER_BUDGETS[cfg.kind]["source"], "public_train": len(public),
            "public_heldout": len(heldout), "history": history,
            "train_seconds_this_call": round(time.perf_counter() - t0, 3), "versions": environment_versions()}
    atomic_save_tensors(run_dir / "generator.safetensors", g.state_dict())
    atomic_save_tensors(run_dir / "discriminator.safetensors", d.state_dict())
    atomic_write_json(run_dir / "prior.json", info)
    remove_artifact(ckpt)
    return Prior(cfg.kind, g.eval(), d.eval(), info, run_dir)


def load_prior(run_dir: str | Path, device: str | torch.device = "cpu") -> Prior:
    """Load a trained prior from its run directory (safetensors, no pickle)."""
    run_dir = Path(run_dir)
    if not (run_dir / "prior.json").is_file():
        raise ReAnalysisError(f"no trained prior in {run_dir} (missing prior.json); drop --prior to train one")
    info = read_json(run_dir / "prior.json")
    cfg = PriorConfig(**config_from_info(info))
    g, d = build_gan(cfg, info["channels"], info["image_size"], info["num_target_classes"])
    g.load_state_dict(load_tensors(run_dir / "generator.safetensors"))
    d.load_state_dict(load_tensors(run_dir / "discriminator.safetensors"))
    return Prior(cfg.kind, g.to(device).eval(), d.to(device).eval(), info, run_dir)


def sample_batch(images: torch.Tensor, batch_size: int, gen: torch.Generator):
    idx = torch.randint(0, len(images), (batch_size,), device=images.device, generator=gen)
    return idx, normalize(images[idx])


def step_wgan_gp(cfg, g, d, opt_g, opt_d, batch, gen, dev):
    """GMI: ``n_critic`` critic steps (Wasserstein loss + gradient penalty), one generator step."""
    z_dim = g.z_dim
    for _ in range(cfg.n_critic):
        _, real = sample_batch(batch["public"], cfg.batch_size, gen)
        z = torch.randn(cfg.batch_size, z_dim, device=dev, generator=gen)
        with torch.no_grad():
            fake = g(z)
        loss_d = d(fake).mean() - d(real).mean() + cfg.gp_weight * gradient_penalty(d, real, fake, gen)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    z = torch.randn(cfg.batch_size, z_dim, device=dev, generator=gen)
    loss_g = -d(g(z)).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}


def step_kedmi(cfg, g, d, opt_g, opt_d, batch, gen, dev):
    """KEDMI (official ``k+1_gan.py``): ``n_critic`` discriminator steps on (labelled batch,
    unlabelled batch, fakes), then one generator step (feature matching + summed entropy)."""
    z_dim = g.z_dim
    for _ in range(cfg.n_critic):
        idx, labelled = sample_batch(batch["public"], cfg.batch_size, gen)
        _, unlabelled = sample_batch(batch["public"], cfg.batch_size, gen)
        z = torch.randn(cfg.batch_size, z_dim, device=dev, generator=gen)
        with torch.no_grad():
            fake = g(z)
        lse_unlab, lse_fake = torch.logsumexp(d(unlabelled), 1), torch.logsumexp(d(fake), 1)
        loss_lab = -(batch["soft"][idx] * F.log_softmax(d(labelled), 1)).sum(1).mean()
        loss_unlab = 0.5 * (F.softplus(lse_unlab).mean() - lse_unlab.mean() + F.softplus(lse_fake).mean())
        loss_d = loss_lab + loss_unlab
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    _, unlabelled = sample_batch(batch["public"], cfg.batch_size, gen)
    z = torch.randn(cfg.batch_size, z_dim, device=dev, generator=gen)
    f_fake = d.features(g(z))
    with torch.no_grad():
        f_real = d.features(unlabelled)
    logits = d.head(f_fake)
    entropy = -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum()  # summed over the batch (official HLoss)
    loss_g = (f_fake.mean(0) - f_real.mean(0)).abs().mean() + cfg.entropy_weight * entropy
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}


def step_plg(cfg, g, d, opt_g, opt_d, batch, gen, dev):
    """PLG-MI (official ``train_cgan.py``): one generator step (hinge + alpha x max-margin of
    the target on augmented fakes), then ``n_critic`` hinge steps of the discriminator on
    dequantised pseudo-labelled public images and fresh fakes."""
    z_dim, k = g.z_dim, g.num_classes
    z = torch.randn(cfg.batch_size, z_dim, device=dev, generator=gen)
    y_fake = torch.randint(0, k, (cfg.batch_size,), device=dev, generator=gen)
    fake = g(z, y_fake)
    with autocast(dev):
        inv = max_margin_loss(batch["target"](batch["augment"](fake, gen)).float(), y_fake)
    loss_g = -d(fake, y_fake).mean() + cfg.alpha * inv
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    for _ in range(cfg.n_critic):
        idx, real = sample_batch(batch["public"], cfg.batch_size, gen)
        real = real + torch.rand(real.shape, device=dev, generator=gen) * (2 / 256)  # official _noise_adder
        z = torch.randn(cfg.batch_size, z_dim, device=dev, generator=gen)
        y_fake = torch.randint(0, k, (cfg.batch_size,), device=dev, generator=gen)
        with torch.no_grad():
            fake = g(z, y_fake)
        loss_d = F.relu(1 - d(real, batch["labels"][idx])).mean() + F.relu(1 + d(fake, y_fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()), "inv": float(inv.detach())}


STEP = {"wgan-gp": step_wgan_gp, "kedmi": step_kedmi, "plg": step_plg}
