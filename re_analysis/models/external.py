"""A classifier of a user's, in the forms people have, as a suite :class:`Classifier`.

The model piece of ``re-analysis audit`` (:mod:`re_analysis.audit`), kept in the models room so
that training can rebuild an audited run (``arch: external``) without importing the audit:

- a **TorchScript** file (``torch.jit.save``);
- a **state dict** (safetensors, or a ``torch.save``'d dict read with ``weights_only=True``) of
  an architecture of the suite's registry (``arch=NAME``);
- **the user's own code**: ``entry="pkg.module:build"``, a function returning an ``nn.Module``
  (called with ``num_classes=``), its weights loaded from ``model`` when given.

The model's input convention is stated once (:class:`InputConvention`) and
:class:`ExternalClassifier` adapts the suite's inputs to it in one place.

Example:
    >>> import torch
    >>> InputConvention.parse(pixels="0-1").to_model(torch.tensor([-1.0, 1.0]))
    tensor([0., 1.])
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReAnalysisError
from .registry import Classifier, create_model, list_models

__all__ = ["InputConvention", "ExternalClassifier", "load_user_model", "check_user_model", "describe", "external_spec",
           "rebuild_external", "file_sha256", "EXTERNAL_SCRIPT"]

PIXELS = ("-1-1", "0-1")


@dataclass(frozen=True)
class InputConvention:
    """How your model expects its inputs. The suite hands every model ``x`` in [-1, 1]
    (``Normalize(0.5, 0.5)`` of pixels in [0, 1]); ``to_model`` converts it."""

    pixels: str = "-1-1"  # "-1-1" (the suite's), "0-1", or "normalize" (mean/std below, on [0, 1] pixels)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def parse(cls, pixels: str | None = None, normalize: str | None = None) -> "InputConvention":
        """From the command line's ``--pixels`` or ``--normalize MEAN,STD`` (one value each, or
        ``m1/m2/m3,s1/s2/s3`` per channel).

        Example:
            >>> InputConvention.parse(normalize="0.485/0.456/0.406,0.229/0.224/0.225").mean
            (0.485, 0.456, 0.406)
        """
        if normalize is not None:
            if pixels is not None:
                raise ReAnalysisError("give either --pixels or --normalize MEAN,STD, not both")
            try:
                mean_text, std_text = normalize.split(",")
                mean = tuple(float(v) for v in mean_text.split("/"))
                std = tuple(float(v) for v in std_text.split("/"))
            except ValueError:
                raise ReAnalysisError(f"--normalize takes MEAN,STD (e.g. 0.5,0.5 or 0.485/0.456/0.406,0.229/0.224/0.225), "
                                      f"got {normalize!r}") from None
            if len(mean) != len(std) or any(s <= 0 for s in std):
                raise ReAnalysisError(f"--normalize needs as many positive STD values as MEAN values, got {normalize!r}")
            return cls("normalize", mean, std)
        pixels = pixels or "-1-1"
        if pixels not in PIXELS:
            raise ReAnalysisError(f"--pixels must be one of {', '.join(PIXELS)} (or use --normalize MEAN,STD), got {pixels!r}")
        return cls(pixels)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Suite input ([-1, 1]) -> the model's convention."""
        if self.pixels == "-1-1":
            return x
        x01 = x * 0.5 + 0.5
        if self.pixels == "0-1":
            return x01
        shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (-1,)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x01 - mean) / std


class ExternalClassifier(Classifier):
    """Your model as a suite classifier: ``forward(x)`` adapts the suite's input to your
    convention and returns your logits; ``features(x)`` is your model's ``features`` when it
    has one (the suite's own architectures), else the logits themselves (the feature-space
    gap and LOMMA's regulariser then read the logits, declared in the report)."""

    def __init__(self, model: nn.Module, convention: InputConvention, num_classes: int, in_channels: int,
                 image_size: int, arch: str = "external"):
        super().__init__()
        self.model, self.convention = model, convention
        self.num_classes, self.in_channels, self.image_size, self.arch = num_classes, in_channels, image_size, arch
        self.has_features = callable(getattr(model, "features", None)) and callable(getattr(model, "head", None))
        self.feature_dim = getattr(model, "feature_dim", num_classes) if self.has_features else num_classes

    def features(self, x):
        x = self.convention.to_model(x)
        return self.model.features(x) if self.has_features else self._logits(x)

    def head(self, f):
        return self.model.head(f) if self.has_features else f

    def _logits(self, x):
        out = self.model(x)
        if isinstance(out, (tuple, list)):  # the MI literature's models return (features, logits)
            out = out[-1]
        return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from safetensors or a ``torch.save``'d dict, without unpickling objects."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ReAnalysisError(f"{path} is not a model file the audit can read ({type(exc).__name__}): give a "
                              "TorchScript file, a safetensors state dict or a torch.save'd state dict") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a checkpoint that wraps its weights
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ReAnalysisError(f"{path} holds no state dict (a mapping of parameter names to tensors); give a "
                              "TorchScript file, or the weights of an architecture named with --arch")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _entry(entry: str, num_classes: int) -> nn.Module:
    module_name, _, func = entry.partition(":")
    if not module_name or not func:
        raise ReAnalysisError(f"--model-entry takes pkg.module:function, got {entry!r}")
    try:
        build = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as exc:
        raise ReAnalysisError(f"--model-entry {entry!r} does not import ({exc}); put its package on PYTHONPATH") from None
    model = build(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ReAnalysisError(f"--model-entry {entry!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def load_user_model(model: str | Path | None, num_classes: int, channels: int, image_size: int,
                    convention: InputConvention, arch: str | None = None, entry: str | None = None
                    ) -> ExternalClassifier:
    """Your model in one of the three forms (module doc), adapted to the suite's inputs.

    Example:
        >>> m = load_user_model(None, 5, 1, 28, InputConvention(), arch="cnn28")  # doctest: +SKIP
    """
    path = Path(model) if model is not None else None
    if path is not None and not path.is_file():
        raise ReAnalysisError(f"model file {path} does not exist; pass the path of your TorchScript or weights file")
    if entry is not None:
        net = _entry(entry, num_classes)
        if path is not None:
            net.load_state_dict(_state_dict(path))
        name = f"entry:{entry}"
    elif arch is not None:
        if arch not in list_models():
            raise ReAnalysisError(f"--arch {arch!r} is not an architecture of the suite; choose one of "
                                  f"{', '.join(list_models())} or give a TorchScript file / --model-entry")
        if path is None:
            raise ReAnalysisError(f"--arch {arch} needs --model, the file holding its weights")
        net = create_model(arch, num_classes, channels, image_size)
        try:
            net.load_state_dict(_state_dict(path))
        except RuntimeError as exc:
            raise ReAnalysisError(f"the weights in {path} do not fit {arch} with {num_classes} classes, {channels} "
                                  f"channel(s), {image_size} px: {str(exc).splitlines()[0]}") from None
        name = arch
    else:
        if path is None:
            raise ReAnalysisError("give your model: --model FILE (TorchScript, or weights with --arch NAME) or "
                                  "--model-entry pkg.module:build")
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception:  # noqa: BLE001 - TorchScript raises many kinds for a file that is not one
            hint = (" (it looks like weights: name their architecture with --arch NAME, or give --model-entry)"
                    if path.suffix in (".safetensors", ".pt", ".pth", ".bin") else "")
            raise ReAnalysisError(f"{path} does not load as a TorchScript model{hint}") from None
        name = "torchscript"
    wrapped = ExternalClassifier(net.eval(), convention, num_classes, channels, image_size, arch=name)
    check_user_model(wrapped)
    return wrapped


@torch.no_grad()
def check_user_model(model: ExternalClassifier) -> None:
    """Run the model once on a batch of the stated size: one clear error if it fails or if its
    output size is not the number of private classes."""
    x = torch.zeros(2, model.in_channels, model.image_size, model.image_size)
    try:
        out = model(x)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, the user needs the shape it got
        raise ReAnalysisError(f"your model fails on images of shape (N, {model.in_channels}, {model.image_size}, "
                              f"{model.image_size}) in its convention ({model.convention.pixels}): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; set --image-size "
                              "and --channels to what it expects") from None
    if out.ndim != 2 or out.shape[1] != model.num_classes:
        raise ReAnalysisError(f"your model returns shape {tuple(out.shape)} but the private data has "
                              f"{model.num_classes} classes; its outputs must be one logit per private class folder "
                              "(use --classes FILE for another order)")


def describe(model: ExternalClassifier) -> dict[str, Any]:
    """What the report says of the audited model."""
    return {"arch": model.arch, "convention": asdict(model.convention), "features": "the model's own features"
            if model.has_features else "its logits (the model exposes no features)"}


# --- the audit run: judges, priors, attacks and tables around the user's model ---------------

EXTERNAL_SCRIPT = "model.torchscript"  # a TorchScript model is copied into its run, which stays self-contained


def external_spec(model: ExternalClassifier, model_path: str | Path | None, entry: str | None) -> dict[str, Any]:
    """How to rebuild ``model`` (without its weights) from what a run records."""
    form = "torchscript" if model.arch == "torchscript" else "entry" if entry else "arch"
    return {"form": form, "arch": None if form != "arch" else model.arch, "entry": entry,
            "convention": asdict(model.convention), "num_classes": model.num_classes,
            "in_channels": model.in_channels, "image_size": model.image_size,
            "source_sha256": file_sha256(model_path) if model_path else None}


def rebuild_external(spec: dict[str, Any], run_dir: str | Path) -> ExternalClassifier:
    """The architecture of an audited model from its run record; :func:`re_analysis.training.load_classifier`
    then loads the recorded weights into it."""
    conv = InputConvention(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["convention"].items()})
    if spec["form"] == "torchscript":
        net = torch.jit.load(str(Path(run_dir) / EXTERNAL_SCRIPT), map_location="cpu")
    elif spec["form"] == "entry":
        net = _entry(spec["entry"], spec["num_classes"])
    else:
        net = create_model(spec["arch"], spec["num_classes"], spec["in_channels"], spec["image_size"])
    arch = {"torchscript": "torchscript", "entry": f"entry:{spec['entry']}"}.get(spec["form"], spec["arch"])
    return ExternalClassifier(net, conv, spec["num_classes"], spec["in_channels"], spec["image_size"], arch=arch)
