"""DP-SGD (Abadi et al., CCS 2016) through Opacus: per-sample gradient clipping to
``max_grad_norm`` and Gaussian noise of ``noise_multiplier * max_grad_norm``.

BatchNorm mixes samples and breaks per-sample privacy, so the model's BatchNorm layers are
replaced (Opacus ``ModuleValidator.fix``: GroupNorm). Batches are uniformly shuffled
(``poisson_sampling=False``), and the privacy spent is reported as epsilon at
delta = 1 / N by Opacus' RDP accountant over all the steps of the run.
"""

from __future__ import annotations

import math

import torch

from ..errors import ReAnalysisError
from .base import Defense, register_defense


@register_defense("dp-sgd", "DP-SGD via Opacus: clipped per-sample gradients + Gaussian noise; reports epsilon")
class DPSGDDefense(Defense):
    """Differentially private training with Opacus; ``metrics.json`` gets ``epsilon`` and ``delta``."""

    name = "dp-sgd"

    def __init__(self, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0):
        for k, v in (("noise_multiplier", noise_multiplier), ("max_grad_norm", max_grad_norm)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ReAnalysisError(f"dp-sgd {k} must be a positive number, got {v!r}")
        self.noise_multiplier, self.max_grad_norm = float(noise_multiplier), float(max_grad_norm)
        self.params = {"noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm}
        self.steps = self.sample_rate = self.n = None

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
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(n)), batch_size=bs)
        engine = PrivacyEngine(accountant="rdp")
        module, dp_optimizer, _ = engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                      noise_multiplier=self.noise_multiplier,
                                                      max_grad_norm=self.max_grad_norm, poisson_sampling=False)
        self.n, self.sample_rate = n, bs / n
        self.steps = int(data["epochs"]) * math.ceil(n / bs)
        return module, dp_optimizer

    def epsilon(self, steps: int | None = None) -> float:
        """Epsilon at delta = 1/N after ``steps`` optimiser steps (default: the whole run)."""
        from opacus.accountants import RDPAccountant

        if self.n is None:
            raise ReAnalysisError("dp-sgd epsilon is known once training is configured")
        acc = RDPAccountant()
        acc.history = [(self.noise_multiplier, self.sample_rate, steps if steps is not None else self.steps)]
        return float(acc.get_epsilon(delta=1.0 / self.n))

    def report(self):
        return {"epsilon": self.epsilon(), "delta": 1.0 / self.n, "dp_steps": self.steps}

    def wrapper_info(self):
        return {"defense": "dp-sgd", "params": self.params}
