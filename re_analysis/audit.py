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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ReAnalysisError
from .models.external import (EXTERNAL_SCRIPT, ExternalClassifier, InputConvention, check_user_model, describe,
                              external_spec, file_sha256, load_user_model)

__all__ = ["InputConvention", "ExternalClassifier", "load_user_model", "check_user_model", "file_sha256", "AuditConfig",
           "run_audit", "write_digit_folders", "example_audit"]


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


def audit_preset(cfg: AuditConfig):
    """The study preset of an audit: the budgets, judges and prior of ``cfg.preset``'s study
    preset on the user's folders, one seed, the user's model as the reference arm (and a
    retrained copy with ``compare_defense`` beside it when the architecture is the suite's)."""
    from .study import load_preset, validate_preset

    if cfg.preset not in AUDIT_PRESETS:
        raise ReAnalysisError(f"--preset must be one of {', '.join(AUDIT_PRESETS)}, got {cfg.preset!r}")
    base = load_preset(AUDIT_PRESETS[cfg.preset])
    attacks = {a: dict(base.attacks.get(a, {})) for a in (cfg.attacks or [base.primary_attack])}
    defenses = {AUDIT_LABEL: {}}
    if cfg.compare_defense:
        if cfg.arch is None:
            raise ReAnalysisError("--compare-defense retrains your architecture with the defense: it needs --arch NAME "
                                  "(an architecture of the suite); a TorchScript file or an entry point cannot be retrained")
        defenses[cfg.compare_defense] = {"defense": cfg.compare_defense, "train": {"arch": cfg.arch}}
    p = {k: v for k, v in base.to_dict().items() if k not in ("description", "defenses", "attacks", "grid", "seeds",
                                                      "gap_figures", "primary_attack", "claims")}
    p.update({"name": f"audit-{cfg.preset}", "dataset": "folders", "root": None, "image_size": cfg.image_size,
              "dataset_params": cfg.dataset_params(), "seeds": [cfg.seed], "defenses": defenses, "attacks": attacks,
              "grid": [{"defenses": "all", "attacks": "all"}], "primary_attack": next(iter(attacks)),
              "gap_figures": [[AUDIT_LABEL, next(iter(attacks))]], "device": cfg.device, "workers": 1,
              "description": f"audit of {cfg.model or cfg.entry} with the budgets of `{AUDIT_PRESETS[cfg.preset]}`"})
    return validate_preset(p)


def install_target(model: ExternalClassifier, spec: dict[str, Any], splits, preset, root: Path,
                   model_path: str | Path | None) -> Path:
    """Write the user's model as a finished run of the study (its record, weights, accuracy on
    the held-out private images and per-image predictions), content-addressed like every run."""
    import pandas as pd

    from .artifacts import atomic_save_tensors, atomic_write_json, atomic_write_text, claim_run_dir, config_hash
    from .data import materialize
    from .models.inputs import predict_logits
    from .runs import WEIGHTS

    config = {"dataset": preset.dataset, "root": None, "image_size": preset.image_size,
              "dataset_params": preset.dataset_params, "seed": preset.seeds[0], "defense": "none",
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
            "image_size": model.image_size, "feature_dim": model.feature_dim, "dataset": preset.dataset,
            "defense": "none", "role": "target", "num_private_classes": model.num_classes, "open_set": False}
    import json

    atomic_save_tensors(run_dir / WEIGHTS, {k: v.contiguous() for k, v in model.state_dict().items()},
                        {"model": json.dumps(info)})
    atomic_write_json(run_dir / "metrics.json", {
        "natural_accuracy": float((pred == y).float().mean()), "dataset": preset.dataset, "arch": model.arch,
        "role": "target", "defense": "none", "seed": preset.seeds[0], "num_classes": model.num_classes,
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
    natural = [_keyed(pd.read_csv(target / TEST_PREDICTIONS), dataset=preset.dataset, defense=AUDIT_LABEL, seed=seed)]
    metrics = {AUDIT_LABEL: pd.read_json(target / "metrics.json", typ="series").to_dict()}
    records = [(AUDIT_LABEL, a, seed, metrics[AUDIT_LABEL],
                attack_evaluate(preset, paths, AUDIT_LABEL, a, seed, progress, target=target)) for a in preset.attacks]
    if cfg.compare_defense:
        res = train_target(preset, paths, cfg.compare_defense, seed, progress)
        natural.append(_keyed(pd.read_csv(res.run_dir / TEST_PREDICTIONS), dataset=preset.dataset,
                              defense=cfg.compare_defense, seed=seed))
        records += [(cfg.compare_defense, a, seed, res.metrics,
                     attack_evaluate(preset, paths, cfg.compare_defense, a, seed, progress)) for a in preset.attacks]
    write_tables(study_tables(preset, paths, records, natural), root, preset)
    from .artifacts import atomic_write_json

    atomic_write_json(root / "audit.json", {"config": asdict(cfg), "model": describe(model),
                                            "target": str(target.relative_to(root)), "preset": preset.name})
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
        written: dict[int, int] = {}  # images per class so far: each file's number in its folder
        for part in parts:
            x, y = materialize(part)
            for img, label in zip(x, y.tolist()):
                folder = tmp / tree / f"digit{names[label]}"
                folder.mkdir(parents=True, exist_ok=True)
                n = written[label] = written.get(label, -1) + 1
                Image.fromarray(img[0].numpy()).save(folder / f"{tree}-{n}.png")
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
