"""DP-SGD (Abadi et al., CCS 2016) through Opacus: per-sample gradient clipping to
``max_grad_norm`` and Gaussian noise of ``noise_multiplier * max_grad_norm``.

The privacy accountant's epsilon assumes Poisson sampling (every example joins each batch
independently with probability q), so the training loop draws its batches that way for this
defense, exactly as Opacus' ``DPDataLoader`` does: ``q = 1 / ceil(N / batch_size)`` and as
many steps per epoch, seeded from ``(seed, epoch)`` (Opacus' ``UniformWithReplacementSampler``
with our generator). BatchNorm mixes samples and breaks per-sample privacy, so the model's
BatchNorm layers are replaced (Opacus ``ModuleValidator.fix``: GroupNorm).

``metrics.json`` records ``epsilon`` at ``delta`` (default 1 / (10 N), below the usual
1 / N bound) from Opacus' RDP accountant over every step of the run, ``delta``,
``dp_sample_rate`` and ``dp_steps``.

Example:
    >>> from re_analysis.defenses import create_defense
    >>> d = create_defense("dp-sgd", noise_multiplier=1.0)
    >>> d.privacy_setup(n=2250, batch_size=64, epochs=6)
    >>> round(d.sample_rate, 5), d.steps, d.delta == 1 / 22500
    (0.02778, 216, True)
"""

from __future__ import annotations

import math

import torch

from ..errors import ReAnalysisError
from .base import Defense, register_defense


@register_defense("dp-sgd", "DP-SGD via Opacus: Poisson batches, clipped per-sample gradients + Gaussian noise; reports epsilon")
class DPSGDDefense(Defense):
    """Differentially private training with Opacus; ``metrics.json`` gets ``epsilon`` and ``delta``."""

    paper = "Abadi et al., Deep Learning with Differential Privacy, CCS 2016"
    code = "https://github.com/pytorch/opacus"
    deviations = (
        ("a batch that Poisson sampling leaves empty is skipped (no noisy step)",
         "it happens with probability (1 - q)^N (about e^-62 on mnist5k); skipping a step only lowers the "
         "privacy loss, so the reported epsilon remains an upper bound"),
    )
    per_sample_privacy = True  # composes only with defenses whose loss is a sum over samples

    def __init__(self, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0, delta: float | None = None):
        for k, v in (("noise_multiplier", noise_multiplier), ("max_grad_norm", max_grad_norm)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ReAnalysisError(f"dp-sgd {k} must be a positive number, got {v!r}")
        if delta is not None and (not isinstance(delta, (int, float)) or not 0 < delta < 1):
            raise ReAnalysisError(f"dp-sgd delta must be a number in (0, 1), got {delta!r}")
        self.noise_multiplier, self.max_grad_norm = float(noise_multiplier), float(max_grad_norm)
        self.requested_delta = None if delta is None else float(delta)
        self.params = {"noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                       "delta": self.requested_delta}
        self.n = self.sample_rate = self.steps_per_epoch = self.steps = self.delta = None
        self.engine = None

    def delta_for(self, n: int) -> float:
        """The requested delta, or 1 / (10 n); a requested delta above 1 / (10 n) is refused."""
        bound = 1 / (10 * n)
        if self.requested_delta is not None and self.requested_delta > bound:
            raise ReAnalysisError(f"dp-sgd delta {self.requested_delta} is above 1/(10 N) = {bound:.3g} for N = {n} "
                                  "training images; pass a smaller delta or leave it unset")
        return self.requested_delta if self.requested_delta is not None else bound

    def check(self, splits):
        self.delta_for(len(splits.private_train))

    def privacy_setup(self, n: int, batch_size: int, epochs: int) -> None:
        """Sampling rate, steps and delta of a run over ``n`` examples (Opacus' DPDataLoader rules)."""
        self.n = int(n)
        self.steps_per_epoch = math.ceil(self.n / int(batch_size))
        self.sample_rate = 1 / self.steps_per_epoch
        self.steps = int(epochs) * self.steps_per_epoch
        self.delta = self.delta_for(self.n)

    def wrap_model(self, model):
        from opacus.validators import ModuleValidator

        fixed = ModuleValidator.fix(model)
        for attr in ("arch", "in_channels", "image_size", "num_classes", "feature_dim"):
            if hasattr(model, attr):
                setattr(fixed, attr, getattr(model, attr))
        return fixed

    def configure(self, model, optimizer, data):
        from opacus import PrivacyEngine

        n, bs = int(data["num_samples"]), int(data["batch_size"])
        self.privacy_setup(n, bs, int(data["epochs"]))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(n)), batch_size=bs)
        self.engine = PrivacyEngine(accountant="rdp")
        module, dp_optimizer, _ = self.engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm, poisson_sampling=True)
        return module, dp_optimizer

    def batches(self, n, batch_size, generator):
        """Poisson batches: each example joins each of the epoch's steps with probability q."""
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        if self.sample_rate is None:
            raise ReAnalysisError("dp-sgd draws its batches once training has configured it (sample rate unknown)")
        sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=self.sample_rate, generator=generator,
                                                steps=self.steps_per_epoch)
        for indices in sampler:
            if indices:
                yield torch.tensor(indices, dtype=torch.long)

    def epsilon(self, steps: int | None = None) -> float:
        """Epsilon at ``self.delta`` after ``steps`` optimiser steps (default: the whole run)."""
        from opacus.accountants import RDPAccountant

        if self.n is None:
            raise ReAnalysisError("dp-sgd epsilon is known once training is configured")
        acc = RDPAccountant()
        acc.history = [(self.noise_multiplier, self.sample_rate, self.steps if steps is None else steps)]
        return float(acc.get_epsilon(delta=self.delta))

    def epsilon_prv(self, steps: int | None = None) -> float:
        """Epsilon at ``self.delta`` from Opacus' PRV accountant (its default since 1.3: a
        tighter numerical bound than RDP's) for the same run."""
        from opacus.accountants import PRVAccountant

        if self.n is None:
            raise ReAnalysisError("dp-sgd epsilon is known once training is configured")
        acc = PRVAccountant()
        acc.history = [(self.noise_multiplier, self.sample_rate, self.steps if steps is None else steps)]
        return float(acc.get_epsilon(delta=self.delta))

    def report(self, model=None, x_test=None, y_test=None):
        """``epsilon`` is the RDP bound (the MI literature's); ``epsilon_prv`` the PRV one beside it."""
        return {"epsilon": self.epsilon(), "epsilon_prv": self.epsilon_prv(), "delta": self.delta,
                "dp_sample_rate": self.sample_rate, "dp_steps": self.steps, "dp_accountant": "rdp",
                "dp_sampling": "poisson"}

    def wrapper_info(self):
        return {"defense": "dp-sgd", "params": self.params}
