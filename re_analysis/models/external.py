"""A classifier of a user's, in the forms people have, as a suite :class:`Classifier`.

The model piece of ``re-analysis audit`` (:mod:`re_analysis.audit`), kept in the models room so
that training can rebuild an audited run (``arch: external``) without importing the audit:

- a **TorchScript** file (``torch.jit.save``);
- a **torch.export** program (``torch.export.save``, a ``.pt2`` file);
- a **state dict** (safetensors, or a ``torch.save``'d dict read with ``weights_only=True``) of
  an architecture of the suite's registry (``arch=NAME``);
- **the user's own code**: ``entry="pkg.module:build"``, a function returning an ``nn.Module``
  (called with ``num_classes=``), its weights loaded from ``model`` when given.

The model's input convention is stated once (:class:`InputConvention`) and
:class:`ExternalClassifier` adapts the suite's inputs to it in one place. What a file holds is
read from its archive before anything is loaded (:func:`model_file_form`), so that a pickled
``torch.save(model)`` is named as such and never unpickled.

Example:
    >>> import torch
    >>> InputConvention.parse(pixels="0-1").to_model(torch.tensor([-1.0, 1.0]))
    tensor([0., 1.])
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReAnalysisError
from .registry import Classifier, create_model, list_models

__all__ = ["InputConvention", "ExternalClassifier", "ExportedModule", "load_user_model", "check_user_model", "describe",
           "external_spec", "rebuild_external", "file_sha256", "model_file_form", "quiet_jit", "EXTERNAL_SCRIPT",
           "EXTERNAL_EXPORT"]

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

    def check_channels(self, channels: int) -> None:
        """One error when ``--normalize`` gives per-channel values for another number of channels
        than ``--channels`` (three values for a one-channel model would broadcast wrongly)."""
        n = len(self.mean)
        if self.pixels == "normalize" and n not in (1, channels):
            raise ReAnalysisError(f"--normalize gives {n} values per channel but --channels is {channels}: give one "
                                  f"MEAN,STD pair per channel ({channels} each, or a single value for all) or set "
                                  f"--channels {n}")

    @property
    def flag(self) -> str:
        """The command-line flag that states this convention (``--pixels 0-1``, ``--normalize m,s``).

        Example:
            >>> InputConvention.parse(normalize="0.485/0.456/0.406,0.229/0.224/0.225").flag
            '--normalize 0.485/0.456/0.406,0.229/0.224/0.225'
        """
        if self.pixels != "normalize":
            return f"--pixels {self.pixels}"
        fmt = lambda v: "/".join(f"{x:g}" for x in v)  # noqa: E731
        return f"--normalize {fmt(self.mean)},{fmt(self.std)}"

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


@contextlib.contextmanager
def quiet_jit():
    """Silence torch's deprecation notices for ``torch.jit`` (TorchScript is a form users ship;
    the notice is torch's advice to its own users, not news of the audit)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.jit.*")
        yield


def _pickled_globals(data: bytes) -> list[str]:
    """The ``module.name`` globals a pickle would import, read with :mod:`pickletools`
    (which executes nothing)."""
    import pickletools

    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - a truncated pickle: what was read so far
        pass
    return names


SAFE_GLOBALS = ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                "torch._utils._rebuild_tensor", "builtins.set", "__builtin__.set", "torch.Size")


def model_file_form(path: str | Path) -> tuple[str, str]:
    """What a model file holds, read from its archive without loading it: ``(form, detail)``
    with form ``torchscript`` (``torch.jit.save``), ``export`` (``torch.export.save``, .pt2),
    ``safetensors``, ``weights`` (a ``torch.save``'d mapping of tensors), ``object`` (a pickled
    Python object such as ``torch.save(model)``; ``detail`` names its classes) or ``unknown``.

    Example:
        >>> import torch, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "w.pt")
        >>> torch.save({"w": torch.zeros(2)}, f)
        >>> model_file_form(f)
        ('weights', '')
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        return "safetensors", ""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any(n.endswith("archive_format") for n in names) or any("/models/" in n and n.endswith(".json")
                                                                      for n in names):
                return "export", ""
            if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
                return "torchscript", ""
            pkl = next((n for n in names if n.endswith("data.pkl")), None)
            if pkl is None:
                return "unknown", "a zip archive that is no torch file"
            data = z.read(pkl)
    elif head[:1] == b"\x80":  # a pickle (torch.save's legacy format)
        data = path.read_bytes()
    else:
        return "unknown", ""
    foreign = [g for g in dict.fromkeys(_pickled_globals(data))
               if g not in SAFE_GLOBALS and not (g.startswith("torch.") and g.endswith("Storage"))]
    if foreign:
        own = [g for g in foreign if not g.startswith(("torch.", "collections.", "builtins.", "__builtin__."))]
        return "object", ", ".join((own or foreign)[:3])
    return "weights", ""


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """Weights from safetensors or a ``torch.save``'d dict, without unpickling objects."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
            raise ReAnalysisError(f"--model {path.name} does not read as safetensors ({_cause(exc)})") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ReAnalysisError(f"--model {path.name} is not a model file the audit can read ({type(exc).__name__}): "
                              "give a TorchScript file, a torch.export .pt2, a safetensors state dict or a "
                              "torch.save'd state dict") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a checkpoint that wraps its weights
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ReAnalysisError(f"--model {path.name} holds no state dict (a mapping of parameter names to tensors); "
                              "give a TorchScript file, a torch.export .pt2, or the weights of an architecture "
                              "named with --arch or built by --model-entry")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights in ``path``, refusing files that are models rather than weights."""
    form, detail = model_file_form(path)
    if form == "object":
        raise ReAnalysisError(_pickled_message(path, detail))
    if form in ("torchscript", "export"):
        what = "a TorchScript model" if form == "torchscript" else "a torch.export program"
        raise ReAnalysisError(f"--model {path.name} is {what}, not weights: audit it on its own (drop --arch / "
                              "--model-entry)")
    return _load_state(path)


def _pickled_message(path: Path, detail: str) -> str:
    return (f"--model {path.name} is a pickled model object ({detail or 'a Python object'}, saved with "
            "torch.save(model)): the audit never unpickles one (loading it runs code from the file); save "
            "torch.jit.script(model) with torch.jit.save, torch.export.export(model, ...) with torch.export.save (.pt2), "
            "or model.state_dict() and give its architecture with --arch NAME or --model-entry pkg.module:build")


def _cause(exc: BaseException) -> str:
    r"""One line that says why, with the exception's kind: the last ``...Error: ...`` line of a
    TorchScript traceback (its first lines only say where), else the message's first line.

    Example:
        >>> _cause(RuntimeError("The following operation failed in the TorchScript interpreter.\n"
        ...                     "  File code/x.py, line 3\nRuntimeError: mat1 and mat2 shapes cannot be multiplied"))
        'RuntimeError: mat1 and mat2 shapes cannot be multiplied'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error:" in ln or "Exception:" in ln]
    line = errors[-1] if errors and len(lines) > 1 else lines[0] if lines else ""
    return line if line.startswith(type(exc).__name__ + ":") else f"{type(exc).__name__}: {line}".rstrip(": ")


def _fit_weights(net: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``state`` into ``net``, or one line naming what does not fit (shapes, missing and
    unexpected names) instead of torch's multi-line ``load_state_dict`` error."""
    own = net.state_dict()
    shapes = [f"{k} is {list(v.shape)} in the file, {list(own[k].shape)} in the model" for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        parts = []
        if shapes:
            parts.append(shapes[0] + (f" (and {len(shapes) - 1} more mismatched)" if len(shapes) > 1 else ""))
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:2])}"
                         f"{', ...' if len(unexpected) > 2 else ''})")
        raise ReAnalysisError(f"the weights in --model {path.name} do not fit {what}: {'; '.join(parts)}")
    net.load_state_dict(state)


def _entry(entry: str, num_classes: int) -> nn.Module:
    module_name, _, func = entry.partition(":")
    if not module_name or not func:
        raise ReAnalysisError(f"--model-entry takes pkg.module:function, got {entry!r}")
    try:
        build = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as exc:
        raise ReAnalysisError(f"--model-entry {entry!r} does not import ({exc}); put its package on PYTHONPATH") from None
    try:
        model = build(num_classes=num_classes)
    except Exception as exc:  # noqa: BLE001 - the user's code: what it raised, in one line
        raise ReAnalysisError(f"--model-entry {entry!r} failed when called with num_classes={num_classes}: "
                              f"{_cause(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ReAnalysisError(f"--model-entry {entry!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


class ExportedModule(nn.Module):
    """A ``torch.export`` program as a module the suite can batch: an export traced at a fixed
    batch size (``torch.export.export(model, (x,))`` without ``dynamic_shapes``) is run in
    chunks of that size (the last padded). The graph keeps the mode it was exported in
    (export in eval mode); ``train()``/``eval()`` do not reach into it (torch refuses)."""

    def __init__(self, program):
        super().__init__()
        self.program = program.module()
        shapes = [n.meta.get("val").shape for n in program.graph.nodes if n.op == "placeholder"
                  and n.name in program.graph_signature.user_inputs and n.meta.get("val") is not None]
        first = shapes[0][0] if shapes and len(shapes[0]) else None
        self.batch = int(first) if isinstance(first, int) else None  # None: a dynamic batch dimension

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, x):
        if self.batch is None or len(x) == self.batch:
            return self.program(x)
        outs = []
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            out = self.program(chunk)
            outs.append(tuple(o[:n] for o in out) if isinstance(out, (tuple, list)) else out[:n])
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs))
        return torch.cat(outs)


def _load_export(path: Path) -> ExportedModule:
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged archive or one from another torch version
        raise ReAnalysisError(f"--model {path.name} does not load as a torch.export program (torch "
                              f"{torch.__version__}): {_cause(exc)}") from None
    return ExportedModule(program)


FORM_NAMES = {"torchscript": "TorchScript", "export": "torch.export", "arch": "state dict", "entry": "entry point"}


def load_user_model(model: str | Path | None, num_classes: int, channels: int, image_size: int,
                    convention: InputConvention, arch: str | None = None, entry: str | None = None
                    ) -> ExternalClassifier:
    """Your model in one of its forms (module doc), adapted to the suite's inputs.

    Example:
        >>> m = load_user_model(None, 5, 1, 28, InputConvention(), arch="cnn28")  # doctest: +SKIP
    """
    path = Path(model) if model is not None else None
    if path is not None and not path.is_file():
        raise ReAnalysisError(f"--model {path} does not exist; pass the path of your TorchScript, .pt2 or weights file")
    convention.check_channels(channels)
    if entry is not None:
        net = _entry(entry, num_classes)
        if path is not None:
            _fit_weights(net, _state_dict(path), path, f"--model-entry {entry} with {num_classes} classes")
        name = f"entry:{entry}"
    elif arch is not None:
        if arch not in list_models():
            raise ReAnalysisError(f"--arch {arch!r} is not an architecture of the suite; choose one of "
                                  f"{', '.join(list_models())} or give a TorchScript file / --model-entry")
        if path is None:
            raise ReAnalysisError(f"--arch {arch} needs --model, the file holding its weights")
        net = create_model(arch, num_classes, channels, image_size)
        _fit_weights(net, _state_dict(path), path, f"--arch {arch} with {num_classes} classes, {channels} channel(s), "
                                                   f"{image_size} px")
        name = arch
    else:
        if path is None:
            raise ReAnalysisError("give your model: --model FILE (TorchScript, torch.export .pt2, or weights with "
                                  "--arch NAME) or --model-entry pkg.module:build")
        form, detail = model_file_form(path)
        if form == "object":
            raise ReAnalysisError(_pickled_message(path, detail))
        if form in ("weights", "safetensors"):
            raise ReAnalysisError(f"--model {path.name} holds weights (a state dict), not a model: name their "
                                  "architecture with --arch NAME (re-analysis models) or give your code with "
                                  "--model-entry pkg.module:build")
        if form == "export":
            net, name = _load_export(path), "export"
        elif form == "torchscript":
            try:
                with quiet_jit():
                    net = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:  # noqa: BLE001 - TorchScript raises many kinds for a damaged file
                raise ReAnalysisError(f"--model {path.name} does not load as a TorchScript model: "
                                      f"{_cause(exc)}") from None
            name = "torchscript"
        else:
            raise ReAnalysisError(f"--model {path.name} is not a model file the audit can read ({detail or 'unknown format'}): "
                                  "give a TorchScript file (torch.jit.save), a torch.export program (.pt2), or weights "
                                  "(safetensors or a torch.save'd state dict) with --arch NAME or --model-entry")
    wrapped = ExternalClassifier(net.eval(), convention, num_classes, channels, image_size, arch=name)
    wrapped.source = path.name if path is not None else entry
    check_user_model(wrapped)
    return wrapped


def model_name(model: ExternalClassifier) -> str:
    """How the report and the terminal name the audited model: the file or entry point given,
    and its form (``fashionnet_ts.pt (TorchScript)``)."""
    form = FORM_NAMES.get(model.arch, FORM_NAMES["entry"] if model.arch.startswith("entry:") else
                          f"{model.arch} state dict")
    source = getattr(model, "source", None)
    return f"{source} ({form})" if source else form


@torch.no_grad()
def check_user_model(model: ExternalClassifier) -> None:
    """Run the model once on a batch of the stated size: one clear error if it fails or if its
    output size is not the number of private classes."""
    x = torch.zeros(2, model.in_channels, model.image_size, model.image_size)
    try:
        with quiet_jit():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, the user needs the shape it got
        raise ReAnalysisError(f"your model {model_name(model)} fails on images of shape (N, {model.in_channels}, "
                              f"{model.image_size}, {model.image_size}) in its convention ({model.convention.flag}): "
                              f"{_cause(exc)}; set --image-size and --channels to what it "
                              "expects") from None
    if isinstance(out, (tuple, list)):
        out = out[-1]
    if out.ndim != 2 or out.shape[1] != model.num_classes:
        raise ReAnalysisError(f"your model {model_name(model)} returns shape {tuple(out.shape)} but the private data "
                              f"has {model.num_classes} classes; its outputs must be one logit per private class "
                              "folder (use --classes FILE for another order)")


def describe(model: ExternalClassifier) -> dict[str, Any]:
    """What the report says of the audited model."""
    return {"arch": model.arch, "name": model_name(model), "convention": asdict(model.convention),
            "features": "the model's own features" if model.has_features else "its logits (the model exposes no features)"}


# --- the audit run: judges, priors, attacks and tables around the user's model ---------------

EXTERNAL_SCRIPT = "model.torchscript"  # a TorchScript model is copied into its run, which stays self-contained
EXTERNAL_EXPORT = "model.pt2"  # so is a torch.export program


def external_spec(model: ExternalClassifier, model_path: str | Path | None, entry: str | None) -> dict[str, Any]:
    """How to rebuild ``model`` (without its weights) from what a run records."""
    form = model.arch if model.arch in ("torchscript", "export") else "entry" if entry else "arch"
    return {"form": form, "arch": None if form != "arch" else model.arch, "entry": entry,
            "convention": asdict(model.convention), "num_classes": model.num_classes,
            "in_channels": model.in_channels, "image_size": model.image_size,
            "source_sha256": file_sha256(model_path) if model_path else None}


def rebuild_external(spec: dict[str, Any], run_dir: str | Path) -> ExternalClassifier:
    """The architecture of an audited model from its run record; :func:`re_analysis.training.load_classifier`
    then loads the recorded weights into it."""
    conv = InputConvention(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["convention"].items()})
    if spec["form"] == "torchscript":
        with quiet_jit():
            net = torch.jit.load(str(Path(run_dir) / EXTERNAL_SCRIPT), map_location="cpu")
    elif spec["form"] == "export":
        net = _load_export(Path(run_dir) / EXTERNAL_EXPORT)
    elif spec["form"] == "entry":
        net = _entry(spec["entry"], spec["num_classes"])
    else:
        net = create_model(spec["arch"], spec["num_classes"], spec["in_channels"], spec["image_size"])
    arch = {"torchscript": "torchscript", "export": "export", "entry": f"entry:{spec['entry']}"}.get(spec["form"],
                                                                                                      spec["arch"])
    return ExternalClassifier(net, conv, spec["num_classes"], spec["in_channels"], spec["image_size"], arch=arch)
