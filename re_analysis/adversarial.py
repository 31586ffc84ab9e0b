"""L-infinity PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018): adversarial examples to train the robust evaluation model and to
measure its robustness.

The budget ``eps`` is in PIXEL units of [0, 1] (Madry et al.: 0.3 on MNIST, 8/255 on
CIFAR-10); the suite's models live in normalised space [-1, 1], where it is ``2 * eps``.
PGD starts at a uniform random point of the eps-ball, takes ``steps`` signed-gradient steps
of ``step_size`` (pixel units; default ``2.5 * eps / steps``, Madry et al.'s rule) on the
cross-entropy, and projects onto the eps-ball and the valid image range after each step.
Only the input's gradient is taken: the model's parameter gradients are left untouched.

Example:
    >>> import torch
    >>> from re_analysis.models import create_model
    >>> m = create_model("preresnet8", 10, 1, 28).eval()
    >>> x = torch.rand(4, 1, 28, 28) * 2 - 1
    >>> adv = pgd_examples(m, x, torch.zeros(4, dtype=torch.long), eps=0.1, steps=2)
    >>> bool((adv - x).abs().max() <= 0.2 + 1e-6)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ReAnalysisError
from .models.inputs import as_model_input, predict_logits

__all__ = ["pgd_examples", "pgd_accuracy", "check_budget"]


def check_budget(eps: float, steps: int, step_size: float | None = None) -> float:
    """Validate a PGD budget; returns the step size in pixel units."""
    if not (isinstance(eps, (int, float)) and 0 < eps <= 1):
        raise ReAnalysisError(f"PGD eps is in pixel units of [0, 1] and must lie in (0, 1], got {eps!r} "
                              "(e.g. 0.1 for digits, 8/255 for natural images)")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ReAnalysisError(f"PGD steps must be a positive integer, got {steps!r}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    if not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ReAnalysisError(f"PGD step_size must be a positive number (pixel units), got {step_size!r}")
    return float(step_size)


def pgd_examples(model, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int,
                 step_size: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L-inf PGD adversarial examples of normalised ``images`` (see module doc).

    ``model`` is used in the mode it is in (train mode during adversarial training, as in
    Madry et al.); ``generator`` seeds the random start (deterministic on CPU).
    """
    alpha = 2 * check_budget(eps, steps, step_size)
    radius = 2 * eps
    x = as_model_input(images).detach()
    noise = torch.rand(x.shape, device=x.device, generator=generator, dtype=x.dtype)
    delta = ((noise * 2 - 1) * radius).requires_grad_(True)
    for _ in range(steps):
        adv = (x + delta).clamp(-1, 1)
        loss = F.cross_entropy(model(adv).float(), labels)
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += alpha * grad.sign()
            delta.clamp_(-radius, radius)
    return (x + delta.detach()).clamp(-1, 1)


def pgd_accuracy(model, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int = 10,
                 step_size: float | None = None, seed: int = 0, batch_size: int = 256) -> float:
    """Top-1 accuracy under PGD (robust accuracy); the model is attacked in eval mode.

    Example:
        >>> pgd_accuracy(model, x_test, y_test, eps=0.1, steps=10)  # doctest: +SKIP
        0.83
    """
    labels = torch.as_tensor(labels).long()
    if len(images) != len(labels):
        raise ReAnalysisError(f"pgd_accuracy got {len(images)} images but {len(labels)} labels")
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    hits = 0
    for i in range(0, len(labels), batch_size):
        x, y = as_model_input(images[i:i + batch_size]).to(device), labels[i:i + batch_size].to(device)
        adv = pgd_examples(model, x, y, eps, steps, step_size, gen)
        hits += int((predict_logits(model, adv).argmax(1) == y.cpu()).sum())
    model.train(was)
    return hits / max(1, len(labels))
