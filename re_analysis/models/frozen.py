"""Frozen copies of trained models, for work that reads a model without training it: an
attack's latent search (gradients flow to the image, never to the weights), the chance
samples and the judges.

:func:`frozen` returns a copy in eval mode with its weights frozen, computing the same
function with the levers of :mod:`re_analysis.models.levers` that are on:

- ``fold_batchnorm`` (rounding): an eval-mode BatchNorm right after a convolution is an affine
  map per channel, folded into that convolution's weights and bias (the standard inference
  fusion, ``torch.nn.utils.fusion``). Layers that hold such a pair outside an
  ``nn.Sequential`` say how with a ``fold_batchnorm()`` method (the GAN generator, the
  pre-activation block).
- ``channels_last_inference`` (rounding; ``inference=True``): the NHWC layout for judges.

Example:
    >>> import torch
    >>> from re_analysis.models import create_model
    >>> m = create_model("cnn28", 5, 1, 28).eval()
    >>> x = torch.rand(4, 1, 28, 28) * 2 - 1
    >>> bool(torch.equal(frozen(m)(x), m(x)))  # no rounding lever on: the same bits
    True
    >>> from re_analysis.models.levers import levers
    >>> with levers(fold_batchnorm=True):
    ...     f = frozen(m)
    >>> bool(torch.allclose(f(x), m(x), atol=1e-5)), any(isinstance(l, torch.nn.BatchNorm2d) for l in f.modules())
    (True, False)
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .inputs import channels_last
from .levers import lever

__all__ = ["frozen", "fold_batchnorm", "fold_conv_bn"]


def _editable(module: nn.Module) -> list[nn.Module]:
    """The submodules whose children may be swapped: not inside TorchScript (compiled code
    calls its own modules)."""
    if isinstance(module, torch.jit.ScriptModule):
        return []
    return [m for m in module.modules() if not isinstance(m, torch.jit.ScriptModule)]


def _foldable_bn(bn) -> bool:
    return (isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


def fold_conv_bn(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """``layer`` (Conv2d, ConvTranspose2d or Linear) followed by the eval-mode BatchNorm ``bn``, as
    one layer of the same kind (a new module); None when the pair cannot be folded."""
    if not _foldable_bn(bn):
        return None
    if isinstance(layer, nn.Linear):
        if not isinstance(bn, nn.BatchNorm1d) or bn.num_features != layer.out_features:
            return None
        scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) * torch.rsqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        out = nn.Linear(layer.in_features, layer.out_features, bias=True).to(layer.weight)
        with torch.no_grad():
            out.weight.copy_(layer.weight * scale[:, None])
            out.bias.copy_((bias - bn.running_mean) * scale + shift)
        return out
    transposed = isinstance(layer, nn.ConvTranspose2d)
    if not isinstance(layer, nn.Conv2d | nn.ConvTranspose2d) or not isinstance(bn, nn.BatchNorm2d):
        return None
    if bn.num_features != layer.out_channels or (transposed and layer.groups != 1):
        return None
    out = copy.deepcopy(layer)
    w, b = fuse_conv_bn_weights(layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps,
                                bn.weight if bn.affine else None, bn.bias if bn.affine else None, transpose=transposed)
    out.weight, out.bias = w, b
    return out


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold, IN PLACE, every eval-mode BatchNorm that directly follows a convolution inside an
    ``nn.Sequential`` (replaced by ``nn.Identity``), and call ``fold_batchnorm()`` on the
    modules that define it (pairs outside a Sequential). Returns ``module``."""
    for child in _editable(module):
        if child is not module and hasattr(child, "fold_batchnorm") and callable(child.fold_batchnorm):
            child.fold_batchnorm()
        if isinstance(child, nn.Sequential):
            names = list(child._modules)
            for a, b in zip(names, names[1:]):
                layer, bn = child._modules[a], child._modules[b]
                if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                    fused = fold_conv_bn(layer, bn)
                    if fused is not None:
                        child._modules[a], child._modules[b] = fused, nn.Identity()
    if _editable(module) and hasattr(module, "fold_batchnorm") and callable(module.fold_batchnorm):
        module.fold_batchnorm()
    return module


def frozen(model: nn.Module, inference: bool = False) -> nn.Module:
    """A frozen copy of ``model`` (eval mode, no weight gradients) computing the same function
    with the levers that are on; ``inference=True`` for forward-only use (judges, chance
    samples), which may also lay it out channels_last. The model itself is left as it was."""
    try:
        m = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 (a model that will not copy, e.g. some exported programs: read as it is)
        return model
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    if lever("fold_batchnorm"):
        m = fold_batchnorm(m)
    if inference and lever("channels_last_inference"):
        channels_last(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m
