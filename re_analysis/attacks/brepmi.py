"""BREP-MI — "Label-Only Model Inversion Attacks via Boundary Repulsion", Kahla et al.,
CVPR 2022.

Label-only: the attack sees nothing but the target's predicted label. It receives the
target wrapped in :class:`LabelOnlyTarget`, and refuses anything else — a model that
returns logits is rejected before any query. Per class, it starts from latents whose
generated image the target labels as that class, then repeatedly samples
``sphere_points`` points on a sphere of radius ``r`` around each latent, queries their
labels and moves the latent away from the points labelled otherwise (boundary repulsion),
growing ``r`` by ``radius_expansion`` whenever the whole sphere lies inside the class.
Defaults from the official code: 32 sphere points, initial radius 2, expansion 1.3,
step size r / 3. All classes and restarts advance together in one batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from ..artifacts import load_state, save_state
from ..errors import ReAnalysisError
from .base import Attack, AttackResult, LabelOnlyTarget, register_attack


@register_attack("brep-mi")
class BREPMI(Attack):
    """BREP-MI (Kahla et al., CVPR 2022): label-only boundary repulsion in the GAN's latent space."""

    prior_kind = "wgan-gp"
    access = "label"
    defaults = {"iterations": 300, "sphere_points": 32, "initial_radius": 2.0, "radius_expansion": 1.3,
                "max_radius": 16.0, "init_batches": 50, "checkpoint_every": 50}

    @torch.no_grad()
    def initial_points(self, oracle: LabelOnlyTarget, prior, labels, seed, device):
        """Random latents the target labels as each row's class (first hits of random draws)."""
        z = torch.zeros(len(labels), prior.z_dim, device=device)
        found = torch.zeros(len(labels), dtype=torch.bool, device=device)
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 31_337)
        for _ in range(int(self.params["init_batches"])):
            cand = torch.randn(256, prior.z_dim, device=device, generator=gen)
            pred = oracle.predict(prior.generator(cand))
            for k in labels[~found].unique().tolist():
                hits = cand[pred == k]
                rows = ((labels == k) & ~found).nonzero().squeeze(1)
                n = min(len(hits), len(rows))
                z[rows[:n]] = hits[:n]
                found[rows[:n]] = True
            if found.all():
                return z
        missing = sorted(labels[~found].unique().tolist())
        raise ReAnalysisError(f"brep-mi found no generated image the target labels as class(es) {missing}; "
                              "raise init_batches or train a better prior")

    def run(self, target, prior, labels, seed, state_path=None, progress=True) -> AttackResult:
        if not isinstance(target, LabelOnlyTarget):
            raise ReAnalysisError("brep-mi is a label-only attack: hand it LabelOnlyTarget(model), "
                                  "not a model that returns logits")
        device = labels.device
        state_path = Path(state_path) if state_path else None
        if state_path is not None and state_path.is_file():
            st = load_state(state_path, {}, {})
            z, radius = st["tensors"]["z"].to(device), st["tensors"]["radius"].to(device)
            start, history = int(st["meta"]["iteration"]), list(st["meta"]["history"])
        else:
            z = self.initial_points(target, prior, labels, seed, device)
            radius = torch.full((len(labels),), float(self.params["initial_radius"]), device=device)
            start, history = 0, []
        n_pts = int(self.params["sphere_points"])
        iters = int(self.params["iterations"])
        for it in tqdm(range(start, iters), desc="brep-mi", initial=start, total=iters, disable=not progress, leave=False):
            gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + it)
            u = torch.randn(len(z), n_pts, z.shape[1], device=device, generator=gen)
            u = u / u.norm(dim=2, keepdim=True)
            pts = z[:, None, :] + radius[:, None, None] * u
            with torch.no_grad():
                pred = target.predict(prior.generator(pts.reshape(-1, z.shape[1]))).view(len(z), n_pts)
            outside = (pred != labels[:, None]).float()
            frac_out = outside.mean(1)
            # repulsion: move opposite to the mean direction of the points labelled otherwise
            direction = -(outside[:, :, None] * u).mean(1)
            norm = direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            step = (radius / 3)[:, None]
            moving = frac_out > 0
            z = torch.where(moving[:, None], z + step * direction / norm, z)
            grow = (frac_out == 0)
            radius = torch.where(grow, (radius * float(self.params["radius_expansion"])).clamp(max=float(self.params["max_radius"])), radius)
            history.append(float(frac_out.mean()))
            if state_path is not None and (it + 1) % int(self.params["checkpoint_every"]) == 0 and it + 1 < iters:
                save_state(state_path, {"z": z, "radius": radius}, {}, {"iteration": it + 1, "history": history})
        with torch.no_grad():
            images = prior.generator(z).float()
        return AttackResult(images, labels, z, history, {"final_radius": radius.tolist()})
