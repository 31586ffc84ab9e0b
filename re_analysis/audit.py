"""Audit a classifier of your own: does it leak its private classes to model inversion?

The suite's study trains its own targets; an audit takes YOURS, in the forms people have:

- a **TorchScript** file (``torch.jit.save``);
- a **state dict** (safetensors, or a ``torch.save``'d dict read with ``weights_only=True``) of
  an architecture of the suite's registry (``--arch NAME``);
- **your own code**: ``--model-entry pkg.module:build``, a function returning an ``nn.Module``
  (called with ``num_classes=``), its weights loaded from ``--model`` when given.

Your model's input convention is stated once (``--image-size``, ``--channels`` and either
``--pixels 0-1``, ``--pixels -1-1`` (the suite's own) or ``--normalize MEAN,STD`` on pixels in
[0, 1]) and :class:`ExternalClassifier` adapts the suite's inputs to it in one place. The
class order is the sorted folder order of ``--private`` or a ``--classes`` file.

Example:
    >>> import torch
    >>> from re_analysis.audit import InputConvention
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

from .errors import ReAnalysisError
from .models.registry import Classifier, create_model, list_models

__all__ = ["InputConvention", "ExternalClassifier", "load_user_model", "check_user_model", "file_sha256", "AuditConfig",
           "run_audit", "write_digit_folders", "example_audit"]

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


@dataclass(frozen=True)
class AuditConfig:
    """What ``re-analysis audit`` asks (see the module doc and ``re-analysis audit --help``)."""

    private: str
    public: str
    out: str
    model: str | None = None
    arch: str | None = None
    entry: str | None = None
    image_size: int = 64
    channels: int = 3
    pixels: str | None = None
    normalize: str | None = None
    classes: str | None = None
    private_test: str | None = None
    preset: str = "smoke"
    attacks: tuple[str, ...] = ()
    compare_defense: str | None = None
    device: str = "auto"
    seed: int = 0

    def dataset_params(self) -> dict[str, Any]:
        return {k: v for k, v in {"private": str(Path(self.private).resolve()), "public": str(Path(self.public).resolve()),
                                  "private_test": str(Path(self.private_test).resolve()) if self.private_test else None,
                                  "channels": self.channels,
                                  "classes": str(Path(self.classes).resolve()) if self.classes else None}.items()
                if v is not None}


AUDIT_PRESETS = {"smoke": "smoke", "quick": "quick", "paper": "full"}  # --preset -> the study preset whose budgets run
AUDIT_LABEL = "none"  # the audited model plays the undefended reference of every comparison


def audit_preset(cfg: AuditConfig) -> dict[str, Any]:
    """The study preset of an audit: the budgets, judges and prior of ``cfg.preset``'s study
    preset on the user's folders, one seed, the user's model as the reference arm (and a
    retrained copy with ``compare_defense`` beside it when the architecture is the suite's)."""
    from .study import load_preset, validate_preset

    if cfg.preset not in AUDIT_PRESETS:
        raise ReAnalysisError(f"--preset must be one of {', '.join(AUDIT_PRESETS)}, got {cfg.preset!r}")
    base = load_preset(AUDIT_PRESETS[cfg.preset])
    attacks = {a: dict(base["attacks"].get(a, {})) for a in (cfg.attacks or [base["primary_attack"]])}
    defenses = {AUDIT_LABEL: {}}
    if cfg.compare_defense:
        if cfg.arch is None:
            raise ReAnalysisError("--compare-defense retrains your architecture with the defense: it needs --arch NAME "
                                  "(an architecture of the suite); a TorchScript file or an entry point cannot be retrained")
        defenses[cfg.compare_defense] = {"defense": cfg.compare_defense, "train": {"arch": cfg.arch}}
    p = {k: v for k, v in base.items() if k not in ("pairs", "description", "defenses", "attacks", "grid", "seeds",
                                                      "gap_figures", "primary_attack", "claims")}
    p.update({"name": f"audit-{cfg.preset}", "dataset": "folders", "root": None, "image_size": cfg.image_size,
              "dataset_params": cfg.dataset_params(), "seeds": [cfg.seed], "defenses": defenses, "attacks": attacks,
              "grid": [{"defenses": "all", "attacks": "all"}], "primary_attack": next(iter(attacks)),
              "gap_figures": [[AUDIT_LABEL, next(iter(attacks))]], "device": cfg.device, "workers": 1,
              "description": f"audit of {cfg.model or cfg.entry} with the budgets of `{AUDIT_PRESETS[cfg.preset]}`"})
    return validate_preset(p)


def install_target(model: ExternalClassifier, spec: dict[str, Any], splits, preset: dict[str, Any], root: Path,
                   model_path: str | Path | None) -> Path:
    """Write the user's model as a finished run of the study (its record, weights, accuracy on
    the held-out private images and per-image predictions), content-addressed like every run."""
    import pandas as pd

    from .artifacts import atomic_save_tensors, atomic_write_json, atomic_write_text, claim_run_dir, config_hash
    from .data import materialize
    from .models.inputs import predict_logits
    from .runs import WEIGHTS

    config = {"dataset": preset["dataset"], "root": None, "image_size": preset["image_size"],
              "dataset_params": preset["dataset_params"], "seed": preset["seeds"][0], "defense": "none",
              "defense_params": {}, "arch": model.arch, "role": "target", "external": spec}
    run_dir = root / "targets" / f"audited-{config_hash(config, 8)}"
    claim_run_dir(run_dir, config, kind="train")
    if (run_dir / "metrics.json").is_file() and (run_dir / WEIGHTS).is_file():
        return run_dir
    if spec["form"] == "torchscript":
        import shutil

        shutil.copy2(model_path, run_dir / EXTERNAL_SCRIPT)
    x, y = materialize(splits.private_test)
    pred = predict_logits(model, x).argmax(1)
    atomic_write_text(run_dir / "test_predictions.csv", pd.DataFrame(
        {"index": range(len(y)), "label": y.numpy(), "predicted": pred.numpy(),
         "correct": (pred == y).numpy().astype(int)}).to_csv(index=False))
    info = {"arch": "external", "external": spec, "num_classes": model.num_classes, "in_channels": model.in_channels,
            "image_size": model.image_size, "feature_dim": model.feature_dim, "dataset": preset["dataset"],
            "defense": "none", "role": "target", "num_private_classes": model.num_classes, "open_set": False}
    import json

    atomic_save_tensors(run_dir / WEIGHTS, {k: v.contiguous() for k, v in model.state_dict().items()},
                        {"model": json.dumps(info)})
    atomic_write_json(run_dir / "metrics.json", {
        "natural_accuracy": float((pred == y).float().mean()), "dataset": preset["dataset"], "arch": model.arch,
        "role": "target", "defense": "none", "seed": preset["seeds"][0], "num_classes": model.num_classes,
        "test_size": len(y), "audited": describe(model), "config_hash": config_hash(config)})
    return run_dir


def run_audit(cfg: AuditConfig, progress: bool = True) -> Path:
    """Audit the user's model end to end; returns the report's path (``OUT/report.html``).

    Loads the data and the model (each bad input: one clear error before anything is
    written), trains the judges (open-set, robust) and the attacks' prior on the public data,
    writes the model as a finished run, attacks it with each attack of the preset (default:
    its primary attack), judges the reconstructions (chance rate, ceilings), measures the
    feature-space gap, optionally retrains the architecture with ``compare_defense`` and
    attacks that copy too, writes the study's tables and renders the report notebook.
    Every step is cached by content, so a re-run resumes.
    """
    from .data import load_dataset
    from .study import (StudyPaths, _keyed, attack_evaluate, robust_judge_dir, study_tables, train_eval_model,
                        train_target, write_tables)
    from .study import TEST_PREDICTIONS

    import pandas as pd

    convention = InputConvention.parse(cfg.pixels, cfg.normalize)
    splits = load_dataset("folders", seed=cfg.seed, image_size=cfg.image_size, **cfg.dataset_params())
    model = load_user_model(cfg.model, splits.num_classes, cfg.channels, cfg.image_size, convention, cfg.arch, cfg.entry)
    preset = audit_preset(cfg)
    root = Path(cfg.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    paths = StudyPaths(root)
    train_eval_model(preset, paths, progress)
    if robust_judge_dir(preset, paths) is not None:
        train_eval_model(preset, paths, progress, robust=True)
    target = install_target(model, external_spec(model, cfg.model, cfg.entry), splits, preset, root, cfg.model)
    seed = cfg.seed
    natural = [_keyed(pd.read_csv(target / TEST_PREDICTIONS), dataset=preset["dataset"], defense=AUDIT_LABEL, seed=seed)]
    metrics = {AUDIT_LABEL: pd.read_json(target / "metrics.json", typ="series").to_dict()}
    records = [(AUDIT_LABEL, a, seed, metrics[AUDIT_LABEL],
                attack_evaluate(preset, paths, AUDIT_LABEL, a, seed, progress, target=target)) for a in preset["attacks"]]
    if cfg.compare_defense:
        res = train_target(preset, paths, cfg.compare_defense, seed, progress)
        natural.append(_keyed(pd.read_csv(res.run_dir / TEST_PREDICTIONS), dataset=preset["dataset"],
                              defense=cfg.compare_defense, seed=seed))
        records += [(cfg.compare_defense, a, seed, res.metrics,
                     attack_evaluate(preset, paths, cfg.compare_defense, a, seed, progress)) for a in preset["attacks"]]
    write_tables(study_tables(preset, paths, records, natural), root, preset)
    from .artifacts import atomic_write_json

    atomic_write_json(root / "audit.json", {"config": asdict(cfg), "model": describe(model),
                                            "target": str(target.relative_to(root)), "preset": preset["name"]})
    return render_report(root)


REPORT_NOTEBOOK = "audit_report.ipynb"


def render_report(root: Path) -> Path:
    """Execute ``notebooks/audit_report.ipynb`` on the audit's tables through papermill (as
    every chapter of the book) and write ``report.ipynb`` and ``report.html`` beside them."""
    import papermill as pm

    from .artifacts import atomic_output

    source = Path(__file__).resolve().parents[1] / "notebooks" / REPORT_NOTEBOOK
    if not source.is_file():
        raise ReAnalysisError(f"the report notebook {source} is missing: the audit renders notebooks/{REPORT_NOTEBOOK} of "
                              "the repository; install the suite from its repository (pip install -e .)")
    executed = root / "report.ipynb"
    with atomic_output(executed) as tmp:
        pm.execute_notebook(str(source), str(tmp), parameters={"run_dir": str(root)}, kernel_name="python3",
                            progress_bar=False, cwd=str(source.parents[1]))
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4))
    html = root / "report.html"
    with atomic_output(html) as tmp:
        Path(tmp).write_text(body, encoding="utf-8")
    return html


def write_digit_folders(root: str | Path) -> Path:
    """The embedded digits (``mnist5k``) as a user would hold them: ``root/private/digit0-4``
    (training and held-out images) and ``root/public/digit5-9``, one PNG per image. Written once
    (a finished tree is kept) and atomically (a half-written tree is never left)."""
    import shutil

    from PIL import Image

    from .data import load_dataset, materialize

    root = Path(root)
    done = root / ".complete"
    if done.is_file():
        return root
    tmp = root.with_name(root.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    splits = load_dataset("mnist5k")
    for tree, parts, names in (("private", (splits.private_train, splits.private_test), list(range(5))),
                               ("public", (splits.public,), list(range(5, 10)))):
        for part in parts:
            x, y = materialize(part)
            for img, label in zip(x, y.tolist()):
                folder = tmp / tree / f"digit{names[label]}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img[0].numpy()).save(folder / f"{tree}-{sum(1 for _ in folder.iterdir())}.png")
    (tmp / ".complete").write_text("mnist5k\n")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def example_audit(out: str | Path, preset: str = "smoke", progress: bool = True) -> dict[str, Path]:
    """The book's example: a classifier trained by the suite on the embedded digits written out
    as class folders (private 0-4, public 5-9), exported as TorchScript as a user would ship it,
    then audited from that file alone. Returns the paths of the ``folders``, the ``study`` that
    trained the model, the ``model`` file and the audit's ``report``; every step resumes.

    Example:
        >>> paths = example_audit("runs/audit-example")   # doctest: +SKIP
        >>> paths["report"].name
        'report.html'
    """
    from .artifacts import atomic_output
    from .study import load_preset, run_study
    from .training import load_classifier

    out = Path(out).resolve()
    folders = write_digit_folders(out / "digits")
    params = {"private": str(folders / "private"), "public": str(folders / "public"), "channels": 1}
    study_preset = load_preset(preset, dataset="folders", image_size=28, dataset_params=params,
                               defenses={"none": {}}, gap_figures=[])
    study = run_study(study_preset, out / "study", progress=progress)
    model = out / "model.pt"
    if not model.is_file():
        target = load_classifier(out / "study" / study["target_dir"].iloc[0]).eval()
        with atomic_output(model) as tmp:
            torch.jit.save(torch.jit.trace(target, torch.zeros(1, 1, 28, 28)), str(tmp))
    report = run_audit(AuditConfig(private=params["private"], public=params["public"], out=str(out / "audit"),
                                   model=str(model), image_size=28, channels=1, preset=preset), progress=progress)
    return {"folders": folders, "study": out / "study", "model": model, "report": report}
