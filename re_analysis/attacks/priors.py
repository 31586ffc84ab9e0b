"""Attackers' GAN priors trained on the PUBLIC split, cached like models.

- ``wgan-gp``: GMI's prior (Zhang et al., CVPR 2020): WGAN-GP, Adam lr 2e-4,
  betas (0.5, 0.999), 5 critic steps per generator step, gradient-penalty weight 10.
  Independent of the target: trained once per public split and seed and shared.
- ``kedmi``: KEDMI's inversion-specific GAN (Chen et al., ICCV 2021): the discriminator has
  one output per TARGET class and learns the target's soft labels on public data
  (soft cross-entropy) plus the semi-supervised real/fake term of Salimans et al. (2016);
  the generator matches the discriminator's mean features on real data, plus a small
  entropy term on the discriminator's class prediction of fakes (weight 1e-4).
- ``plg``: PLG-MI's conditional GAN (Yuan et al., AAAI 2023): the public images the target
  is most confident about become pseudo-labelled per target class (top-``n`` per class);
  generator and projection discriminator train with the hinge loss, and the generator also
  minimises the target's max-margin loss on augmented fakes (weight ``alpha``, 0.2 in PLG-MI).

Each prior run writes ``generator.safetensors``, ``discriminator.safetensors`` and
``prior.json``; a checkpoint every ``checkpoint_every`` steps makes it resumable.
"""

from __future__ import annotations

import json
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
from ..errors import ReAnalysisError
from ..models.inputs import autocast, normalize, predict_logits, resolve_device
from .gan import Discriminator, Generator

PRIOR_KINDS = ("wgan-gp", "kedmi", "plg")


@dataclass(frozen=True)
class PriorConfig:
    """What determines a prior. ``target_hash`` ties KEDMI/PLG priors to their target."""

    kind: str = "wgan-gp"
    dataset: str = "mnist5k"
    root: str | None = None
    image_size: int | None = None
    dataset_params: dict = field(default_factory=dict)
    seed: int = 0
    steps: int = 1500
    batch_size: int = 64
    z_dim: int = 100
    dim: int | None = None
    lr: float = 2e-4
    n_critic: int = 5
    gp_weight: float = 10.0
    top_n: int = 200
    alpha: float = 0.2
    target_hash: str | None = None
    checkpoint_every: int = 250

    def __post_init__(self):
        if self.kind not in PRIOR_KINDS:
            raise ReAnalysisError(f"unknown prior kind {self.kind!r}; choose one of {', '.join(PRIOR_KINDS)}")
        for name in ("steps", "batch_size", "z_dim", "n_critic", "top_n", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ReAnalysisError(f"prior {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.kind != "wgan-gp" and not self.target_hash:
            raise ReAnalysisError(f"a {self.kind} prior is trained against a target: pass the target run")

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("checkpoint_every")
        if not d["dataset_params"]:
            d.pop("dataset_params")
        return d


@dataclass
class Prior:
    """A trained prior: generator, discriminator and how they were made."""

    kind: str
    generator: Generator
    discriminator: Discriminator
    info: dict[str, Any]
    run_dir: Path | None = None

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim


def gan_width(cfg: PriorConfig, image_size: int) -> int:
    """Base width: GMI's 64 at 64 px and above; 32 at 28/32 px (4x cheaper on a CPU)."""
    return cfg.dim or (32 if image_size <= 32 else 64)


def build_gan(cfg: PriorConfig, channels: int, image_size: int, num_target_classes: int):
    conditional = cfg.kind == "plg"
    cfg = replace(cfg, dim=gan_width(cfg, image_size))
    g = Generator(image_size, channels, cfg.z_dim, cfg.dim, num_classes=num_target_classes if conditional else 0)
    out_dim = num_target_classes if cfg.kind == "kedmi" else 1
    d = Discriminator(image_size, channels, cfg.dim, out_dim=out_dim,
                      projection_classes=num_target_classes if conditional else 0)
    return g, d


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


def random_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PLG-MI-style augmentation of fakes: random resized crop (scale 0.8-1) and flip.

    Written on tensors (not torchvision v2) so that every image gets its own crop and the
    draw comes from ``generator`` (resumable, deterministic).
    """
    n, _, h, w = x.shape
    dev = x.device
    scale = 0.8 + 0.2 * torch.rand(n, device=dev, generator=generator)
    shift = (1 - scale)[:, None] * (2 * torch.rand(n, 2, device=dev, generator=generator) - 1)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, :, 2] = shift
    flip = torch.rand(n, device=dev, generator=generator) < 0.5
    theta[flip, 0, 0] *= -1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def pseudo_label(target, public_images: torch.Tensor, num_classes: int, top_n: int):
    """PLG-MI: for each target class, the ``top_n`` public images with the highest target confidence."""
    probs = predict_logits(target, public_images).softmax(1)
    xs, ys = [], []
    for k in range(num_classes):
        idx = probs[:, k].argsort(descending=True)[:top_n]
        xs.append(public_images[idx])
        ys.append(torch.full((len(idx),), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


@claim_scope()  # the prior's run directory stays locked until it is trained
def train_prior(cfg: PriorConfig, out_dir: str | Path | None = None, target=None,
                cache_root: str | Path = "runs", device: str = "auto", progress: bool = True) -> Prior:
    """Train (or reuse) the prior ``cfg`` describes on the public split."""
    if cfg.kind != "wgan-gp" and target is None:
        raise ReAnalysisError(f"a {cfg.kind} prior needs the target model (it learns from the target's outputs)")
    splits = load_dataset(cfg.dataset, root=cfg.root, seed=cfg.seed, image_size=cfg.image_size, **cfg.dataset_params)
    cfg = replace(cfg, image_size=splits.image_size)
    run_dir = Path(out_dir) if out_dir else Path(cache_root) / f"prior-{cfg.kind}-{config_hash(cfg.key())}"
    dev = resolve_device(device)
    claim_run_dir(run_dir, cfg.key(), kind="prior")
    if (run_dir / "prior.json").is_file():
        return load_prior(run_dir, dev)

    num_target = splits.num_classes
    torch.manual_seed(cfg.seed)
    g, d = build_gan(cfg, splits.channels, splits.image_size, num_target)
    g, d = g.to(dev), d.to(dev)
    betas = (0.5, 0.999) if cfg.kind != "plg" else (0.0, 0.9)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=betas)
    public, _ = materialize(splits.public)
    soft = None
    labels = None
    if cfg.kind == "kedmi":
        soft = predict_logits(target, public).softmax(1)
    if cfg.kind == "plg":
        public, labels = pseudo_label(target, public, num_target, cfg.top_n)
    public = public.to(dev)
    if target is not None:
        target = target.to(dev).eval()
        for p in target.parameters():
            p.requires_grad_(False)

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
        stats = STEP[cfg.kind](cfg, g, d, opt_g, opt_d, public, soft, labels, target, gen, dev)
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step + 1, **stats})
            bar.set_postfix(**{k: f"{v:.3f}" for k, v in stats.items()})
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_state(ckpt, {"g": g, "d": d}, {"g": opt_g, "d": opt_d}, {"step": step + 1, "history": history})

    info = {"kind": cfg.kind, "config": cfg.key(), "image_size": splits.image_size, "channels": splits.channels,
            "num_target_classes": num_target, "history": history,
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
    cfg = PriorConfig(**info["config"])
    g, d = build_gan(cfg, info["channels"], info["image_size"], info["num_target_classes"])
    g.load_state_dict(load_tensors(run_dir / "generator.safetensors"))
    d.load_state_dict(load_tensors(run_dir / "discriminator.safetensors"))
    return Prior(cfg.kind, g.to(device).eval(), d.to(device).eval(), info, run_dir)


def sample_batch(images: torch.Tensor, batch_size: int, gen: torch.Generator):
    idx = torch.randint(0, len(images), (batch_size,), device=images.device, generator=gen)
    return idx, normalize(images[idx])


def step_wgan_gp(cfg, g, d, opt_g, opt_d, public, soft, labels, target, gen, dev):
    for _ in range(cfg.n_critic):
        _, real = sample_batch(public, cfg.batch_size, gen)
        z = torch.randn(cfg.batch_size, cfg.z_dim, device=dev, generator=gen)
        with torch.no_grad():
            fake = g(z)
        loss_d = d(fake).mean() - d(real).mean() + cfg.gp_weight * gradient_penalty(d, real, fake, gen)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    z = torch.randn(cfg.batch_size, cfg.z_dim, device=dev, generator=gen)
    loss_g = -d(g(z)).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}


def step_kedmi(cfg, g, d, opt_g, opt_d, public, soft, labels, target, gen, dev):
    idx, real = sample_batch(public, cfg.batch_size, gen)
    z = torch.randn(cfg.batch_size, cfg.z_dim, device=dev, generator=gen)
    fake = g(z)
    logit_real, logit_fake = d(real), d(fake.detach())
    lse_real, lse_fake = torch.logsumexp(logit_real, 1), torch.logsumexp(logit_fake, 1)
    loss_lab = -(soft.to(dev)[idx] * F.log_softmax(logit_real, 1)).sum(1).mean()
    loss_unlab = 0.5 * (-lse_real.mean() + F.softplus(lse_real).mean() + F.softplus(lse_fake).mean())
    loss_d = loss_lab + loss_unlab
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    z = torch.randn(cfg.batch_size, cfg.z_dim, device=dev, generator=gen)
    fake = g(z)
    f_fake, f_real = d.features(fake), d.features(real).detach()
    p_fake = F.softmax(d.out(f_fake), 1)
    entropy = -(p_fake * torch.log(p_fake + 1e-8)).sum(1).mean()
    loss_g = (f_fake.mean(0) - f_real.mean(0)).abs().mean() + 1e-4 * entropy
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}


def step_plg(cfg, g, d, opt_g, opt_d, public, soft, labels, target, gen, dev):
    idx, real = sample_batch(public, cfg.batch_size, gen)
    y_real = labels.to(dev)[idx]
    y_fake = torch.randint(0, target.num_classes, (cfg.batch_size,), device=dev, generator=gen)
    z = torch.randn(cfg.batch_size, cfg.z_dim, device=dev, generator=gen)
    with torch.no_grad():
        fake = g(z, y_fake)
    loss_d = F.relu(1 - d(real, y_real)).mean() + F.relu(1 + d(fake, y_fake)).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    fake = g(z, y_fake)
    with autocast(dev):
        inv = max_margin_loss(target(random_augment(fake, gen)).float(), y_fake)
    loss_g = -d(fake, y_fake).mean() + cfg.alpha * inv
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()), "inv": float(inv.detach())}


STEP = {"wgan-gp": step_wgan_gp, "kedmi": step_kedmi, "plg": step_plg}
