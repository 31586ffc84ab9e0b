"""Audit a classifier of your own: does it leak its private classes to model inversion?

The suite's study trains its own targets; an audit takes YOURS, in the forms people have:

- a **TorchScript** file (``torch.jit.save``);
- a **torch.export** program (``torch.export.save``, a ``.pt2`` file);
- a **state dict** (safetensors, or a ``torch.save``'d dict read with ``weights_only=True``) of
  an architecture of the suite's registry (``--arch NAME``);
- **your own code**: ``--model-entry pkg.module:build``, a function returning an ``nn.Module``
  (called with ``num_classes=``), its weights loaded from ``--model`` when given.

Your model's input convention is stated once (``--image-size``, ``--channels`` and either
``--pixels 0-1``, ``--pixels -1-1`` (the suite's own) or ``--normalize MEAN,STD`` on pixels in
[0, 1]) and :class:`ExternalClassifier` adapts the suite's inputs to it in one place. The
class order is the sorted folder order of ``--private`` or a ``--classes`` file.

Before anything is trained or written (:func:`prepare_audit`), every image is decoded once
(:func:`re_analysis.data.folders.check_images`) and the model's accuracy on held-out private
images under the declared convention is compared with the common alternatives
(:func:`check_convention`): a clearly better one stops the audit with one line naming it.
The report opens with the audit's bottom line (:func:`re_analysis.report.audit.audit_verdict`).

Example:
    >>> import torch
    >>> from re_analysis.audit import InputConvention
    >>> InputConvention.parse(pixels="0-1").to_model(torch.tensor([-1.0, 1.0]))
    tensor([0., 1.])
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ReAnalysisError
from .models.external import (EXTERNAL_EXPORT, EXTERNAL_SCRIPT, ExternalClassifier, InputConvention, check_user_model,
                              describe, external_spec, file_sha256, load_user_model, model_name, quiet_jit)

__all__ = ["InputConvention", "ExternalClassifier", "load_user_model", "check_user_model", "file_sha256", "AuditConfig",
           "prepare_audit", "check_convention", "run_audit", "audit_summary_lines", "write_digit_folders",
           "example_audit"]


@dataclass(frozen=True)
class AuditConfig:
    """What ``re-analysis audit`` asks (see the module doc and ``re-analysis audit --help``)."""

    private: str
    public: str
    out: str
    model: str | None = None
    arch: str | None = None
    entry: str | None = None
    image_size: int | None = None  # None: the size of the private images (they must share one)
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
    keep_convention: bool = False  # audit as declared even where another input convention scores clearly better
    mixed_sizes: bool = False      # accept images of several sizes in one tree (each resized to image_size)

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
    if spec["form"] in ("torchscript", "export"):
        import shutil

        shutil.copy2(model_path, run_dir / (EXTERNAL_SCRIPT if spec["form"] == "torchscript" else EXTERNAL_EXPORT))
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


# --- before anything is written: the images, the model and its input convention --------------

CONVENTION_MARGIN = 0.05  # another convention "clearly better": at least 5 points more accurate ...
CONVENTION_Z = 3.0        # ... and 3 standard errors of the paired difference above the declared one
CONVENTION_SAMPLE = 2000  # held-out private images the check reads at most (a seeded draw)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def convention_candidates(declared: InputConvention, channels: int, x01: torch.Tensor) -> dict[str, InputConvention]:
    """The declared convention and the common alternatives: pixels in [0, 1], in [-1, 1], the
    ImageNet statistics (their channel average for one channel) and the images' own
    per-channel mean and standard deviation (``x01``: images in [0, 1]). Named by their flags."""
    mean, std = IMAGENET if channels == 3 else ((round(float(np.mean(IMAGENET[0])), 3),),
                                                (round(float(np.mean(IMAGENET[1])), 3),))
    dims = [0] + list(range(2, x01.ndim))
    own_mean = tuple(round(float(v), 3) for v in x01.mean(dim=dims))
    own_std = tuple(round(max(float(v), 1e-3), 3) for v in x01.std(dim=dims))
    if len(set(own_mean)) == 1 and len(set(own_std)) == 1:  # grey images stored as RGB: one value says it
        own_mean, own_std = own_mean[:1], own_std[:1]
    out = {"declared": declared}
    for label, conv in (("[0, 1]", InputConvention("0-1")), ("[-1, 1]", InputConvention("-1-1")),
                        ("ImageNet statistics", InputConvention("normalize", mean, std)),
                        ("the images' own statistics", InputConvention("normalize", own_mean, own_std))):
        if conv.flag not in {c.flag for c in out.values()}:
            out[label] = conv
    return out


def known_as(declared: InputConvention, channels: int, x01: torch.Tensor) -> str | None:
    """Which common convention the declared one is, if any (``"ImageNet statistics"``)."""
    probe = convention_candidates(InputConvention("normalize", (-1.0,), (1.0,)), channels, x01)  # a placeholder
    return next((label for label, conv in probe.items() if label != "declared" and conv.flag == declared.flag), None)


def _clearly_better(h, base) -> tuple[bool, float]:
    """Whether hits ``h`` beat ``base`` on the same images by ``CONVENTION_MARGIN`` and
    ``CONVENTION_Z`` standard errors of the paired difference; and the difference."""
    n = len(base)
    b, c = int((h & ~base).sum()), int((~h & base).sum())  # discordant pairs
    diff = (b - c) / n
    se = np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return bool(diff >= CONVENTION_MARGIN and diff > CONVENTION_Z * se), diff


def best_class_order(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The class each output index most likely stands for: the assignment of outputs to
    classes that maximises accuracy (Hungarian algorithm on the confusion matrix).
    ``order[i]`` is the class of output ``i``.

    Example:
        >>> best_class_order(np.array([1, 1, 0, 2]), np.array([0, 0, 1, 2]), 3).tolist()
        [1, 0, 2]
    """
    from scipy.optimize import linear_sum_assignment

    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (pred, labels), 1)  # rows: the model's output, columns: the folder's class
    rows, cols = linear_sum_assignment(-confusion)
    order = np.arange(k)
    order[rows] = cols
    return order


@torch.no_grad()
def check_convention(model: ExternalClassifier, images, labels, keep: bool = False,
                     class_names: list[str] | None = None, order_source: str = "sorted folder order",
                     defaulted: bool = False) -> list[dict]:
    """Your model's accuracy on held-out private ``images`` (uint8, N x C x H x W) under the
    declared input convention and each common alternative, and under the class order its
    outputs fit best; stops with one line naming a convention or a class order that is clearly
    better (``CONVENTION_MARGIN`` more accurate and ``CONVENTION_Z`` standard errors of the
    paired difference above the declared one), unless ``keep``. Returns one row per convention:
    ``convention``, ``flag``, ``accuracy``, ``declared``, ``accuracy_best_order``.

    Example:
        >>> rows = check_convention(model, x, y)  # doctest: +SKIP
        >>> [(r["flag"], round(r["accuracy"], 2)) for r in rows]  # doctest: +SKIP
        [('--pixels -1-1', 0.76), ('--pixels 0-1', 0.31), ('--normalize 0.485/0.456/0.406,0.229/0.224/0.225', 0.92)]
    """
    from .models.inputs import predict_logits

    x01 = images.float() / 255
    y = labels.numpy()
    k = model.num_classes
    candidates = convention_candidates(model.convention, model.in_channels, x01)
    hits, reordered, orders = {}, {}, {}
    for label, conv in candidates.items():
        probe = ExternalClassifier(model.model, conv, model.num_classes, model.in_channels, model.image_size, model.arch)
        with quiet_jit():
            pred = predict_logits(probe, images, device="cpu").argmax(1).numpy()
        hits[label] = pred == y
        orders[label] = best_class_order(pred, y, k)
        reordered[label] = orders[label][pred] == y
    known = known_as(model.convention, model.in_channels, x01)
    rows = [{"convention": f"declared ({known})" if label == "declared" and known else label, "flag": conv.flag,
             "accuracy": float(hits[label].mean()),
             "declared": label == "declared", "accuracy_best_order": float(reordered[label].mean())}
            for label, conv in candidates.items()]
    base = hits["declared"]
    best = None  # (convention, reordered?, difference)
    for label in candidates:
        for moved, h in ((False, hits[label]), (True, reordered[label])):
            if (label == "declared" and not moved) or (moved and (orders[label] == np.arange(k)).all()):
                continue
            better, diff = _clearly_better(h, base)
            if better and (best is None or diff > best[2] + 1e-9):
                best = (label, moved, diff)
    if best is None or keep:
        return rows
    label, moved, _ = best
    declared = model.convention.flag + (", the default" if defaulted else "")
    score = (reordered if moved else hits)[label].mean()
    fixes = []
    if label != "declared":
        fixes.append(f"the input convention {candidates[label].flag} ({label})")
    if moved:
        names = class_names or [str(i) for i in range(k)]
        order = [names[c] for c in orders[label]]
        fixes.append(f"a --classes FILE naming one folder per line in the order of your model's outputs ("
                     f"{', '.join(order[:12])}{', ...' if k > 12 else ''})")
    raise ReAnalysisError(
        f"your model scores {base.mean():.3f} on {len(base)} held-out private images as declared ({declared}; classes "
        f"in {order_source}) but "
        f"{score:.3f} with {' and '.join(fixes)}: give {'them' if len(fixes) > 1 else 'it'}, or pass --keep-convention "
        "to audit it as declared")


def _image_size(cfg: "AuditConfig", images: dict[str, dict]) -> int:
    """``--image-size``, or the one square size of the private images."""
    if cfg.image_size is not None:
        return int(cfg.image_size)
    sizes = images["private"]["sizes"]
    common = next(iter(sizes))
    w, h = (int(v) for v in common.split("x"))
    if len(sizes) > 1 or w != h:
        raise ReAnalysisError(f"the private images are {', '.join(sizes)} px: give --image-size N, the square size your "
                              "model reads (each image is resized to it)")
    return w


def _first_size(paths) -> int:
    """The size of the first private image whose header reads (the full check follows); one
    error asking for ``--image-size`` when it is not square."""
    from PIL import Image

    for p in paths[:20]:
        try:
            with Image.open(p) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - check_images names it
            continue
        if w != h:
            raise ReAnalysisError(f"the private images are not square ({Path(p).name} is {w}x{h} px): give "
                                  "--image-size N, the square size your model reads (each image is resized to it)")
        return int(w)
    return 64


def prepare_audit(cfg: "AuditConfig", progress: bool = False):
    """Every check of the audit's inputs, before anything is trained or written: the flags,
    the folders (class folders, non-image files), the model (its form, its weights, its output
    size), every image (decodes, one size per tree, colour with ``--channels 1``) and the
    model's input convention against the alternatives. Returns ``(cfg, splits, model, checks)``
    with ``cfg.image_size`` filled in and ``checks`` what the report records (images per tree,
    sizes, the convention table, class names, notes)."""
    from .data import load_dataset, materialize
    from .data.folders import check_images

    convention = InputConvention.parse(cfg.pixels, cfg.normalize)
    convention.check_channels(cfg.channels)
    audit_preset(replace(cfg, image_size=cfg.image_size or 64))  # the preset, attacks and defense named exist
    if cfg.model is None and cfg.entry is None:
        raise ReAnalysisError("give your model: --model FILE (TorchScript, torch.export .pt2, or weights with --arch "
                              "NAME) or --model-entry pkg.module:build")
    splits = load_dataset("folders", seed=cfg.seed, image_size=cfg.image_size or 64, **cfg.dataset_params())
    private_paths = splits.private_train.paths + ([] if cfg.private_test else splits.private_test.paths)
    guess = cfg.image_size or _first_size(private_paths)
    model = load_user_model(cfg.model, splits.num_classes, cfg.channels, guess, convention, cfg.arch, cfg.entry)
    trees = {"private": private_paths}
    if cfg.private_test:
        trees["private-test"] = splits.private_test.paths
    trees["public"] = splits.public.paths
    images = check_images(trees, cfg.channels, cfg.mixed_sizes, progress)
    size = _image_size(cfg, images)
    if size != (cfg.image_size or 64):
        splits = load_dataset("folders", seed=cfg.seed, image_size=size, **cfg.dataset_params())
    if size != guess:
        model = load_user_model(cfg.model, splits.num_classes, cfg.channels, size, convention, cfg.arch, cfg.entry)
    cfg = replace(cfg, image_size=size)
    test = splits.private_test
    if len(test) > CONVENTION_SAMPLE:
        test = test.subset(np.sort(np.random.default_rng(cfg.seed).choice(len(test), CONVENTION_SAMPLE, replace=False)))
    x, y = materialize(test)
    conventions = check_convention(model, x, y, keep=cfg.keep_convention, class_names=splits.private_class_names,
                                   order_source="the --classes file's order" if cfg.classes else "sorted folder order",
                                   defaulted=cfg.pixels is None and cfg.normalize is None)
    notes = []
    if not cfg.private_test:
        notes.append("no --private-test: the held-out private images are a seeded 10% of --private, which your model "
                     "most likely trained on, so its accuracy on them is optimistic (the judges did not train on them, "
                     "so their ceilings stand); give your real test images with --private-test DIR")
    best = max(conventions, key=lambda r: r["accuracy"])
    if cfg.keep_convention and not best["declared"]:
        declared = next(r for r in conventions if r["declared"])
        notes.append(f"--keep-convention: audited with {declared['flag']} ({declared['accuracy']:.3f} on held-out "
                     f"images) although {best['flag']} scores {best['accuracy']:.3f}")
    resized = sorted({s for t in images.values() for s in t["sizes"] if s != f"{size}x{size}"})
    if resized:
        notes.append(f"images of {', '.join(resized)} px are resized to {size} px")
    batch = getattr(model.model, "batch", None)
    if batch is not None:
        notes.append(f"your torch.export program was exported for a batch of exactly {batch}: the audit runs it "
                     f"{batch} image(s) at a time (export with dynamic_shapes for a batch dimension of any size)")
    checks = {"images": images, "conventions": conventions, "notes": notes,
              "class_names": list(splits.private_class_names), "public_class_names": list(splits.public_class_names)}
    return cfg, splits, model, checks


def run_audit(cfg: AuditConfig, progress: bool = True) -> Path:
    """Audit the user's model end to end; returns the report's path (``OUT/report.html``).

    Checks every input first (:func:`prepare_audit`: each bad input is one clear error before
    anything is written), then trains the judges (open-set, robust) and the attacks' prior on
    the public data, writes the model as a finished run, attacks it with each attack of the
    preset (default: its primary attack), judges the reconstructions (chance rate, ceilings),
    measures the feature-space gap, optionally retrains the architecture with
    ``compare_defense`` and attacks that copy too, writes the study's tables, the audit's
    verdict (``audit_verdict.csv``) and renders the report notebook. Every step is cached by
    content, so a re-run resumes.
    """
    from .runs import run_record
    from .study import (StudyPaths, attack_evaluate, robust_judge_dir, study_tables, train_eval_model, train_target,
                        with_keys, write_tables)
    from .study import TEST_PREDICTIONS

    import time

    import pandas as pd

    cfg, splits, model, checks = prepare_audit(cfg, progress)
    if progress:
        for note in checks["notes"]:
            print(f"re-analysis: note: {note}", file=sys.stderr)
    preset = audit_preset(cfg)
    root = Path(cfg.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    paths = StudyPaths(root)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    train_eval_model(preset, paths, progress)
    if robust_judge_dir(preset, paths) is not None:
        train_eval_model(preset, paths, progress, robust=True)
    seconds["judges"] = time.perf_counter() - t0
    target = install_target(model, external_spec(model, cfg.model, cfg.entry), splits, preset, root, cfg.model)
    seed = cfg.seed
    natural = [with_keys(pd.read_csv(target / TEST_PREDICTIONS), dataset=preset.dataset, defense=AUDIT_LABEL, seed=seed)]
    metrics = {AUDIT_LABEL: run_record(target, "metrics.json")}
    records = []
    for a in preset.attacks:
        t0 = time.perf_counter()
        records.append((AUDIT_LABEL, a, seed, metrics[AUDIT_LABEL],
                        attack_evaluate(preset, paths, AUDIT_LABEL, a, seed, progress, target=target)))
        seconds[f"attack {a}"] = time.perf_counter() - t0
    if cfg.compare_defense:
        res = train_target(preset, paths, cfg.compare_defense, seed, progress)
        natural.append(with_keys(pd.read_csv(res.run_dir / TEST_PREDICTIONS), dataset=preset.dataset,
                              defense=cfg.compare_defense, seed=seed))
        records += [(cfg.compare_defense, a, seed, res.metrics,
                     attack_evaluate(preset, paths, cfg.compare_defense, a, seed, progress)) for a in preset.attacks]
    write_tables(study_tables(preset, paths, records, natural), root, preset)
    from .artifacts import atomic_write_json, atomic_write_text, read_json
    from .report.audit import audit_verdicts, step_seconds

    previous = read_json(root / "audit.json") if (root / "audit.json").is_file() else {}
    record = {"config": asdict(cfg), "model": describe(model), "target": str(target.relative_to(root)),
              "preset": preset.name, "primary_attack": preset.primary_attack,
              "seconds": step_seconds(root, seconds, previous.get("seconds", {})), "device": _device_name(preset.device),
              **{k: v for k, v in checks.items()}}
    atomic_write_json(root / "audit.json", record)
    verdicts = audit_verdicts(root)
    atomic_write_text(root / "audit_verdict.csv", verdicts.to_csv(index=False))
    redraw_figures(root, record)
    return render_report(root)


def audit_summary_lines(root: str | Path) -> list[str]:
    """What the terminal says at the end of an audit: its notes and its verdict, one line each
    (the report says the same at its top)."""

    import pandas as pd

    from .runs import run_record

    root = Path(root)
    record = run_record(root, "audit.json", default={})
    lines = [f"note: {n}" for n in record.get("notes", [])]
    path = root / "audit_verdict.csv"
    if path.is_file():
        table = pd.read_csv(path)
        v = table[table["primary"]].iloc[0] if table["primary"].any() else table.iloc[0]
        detail = (f"{v.attack} under the {v.judge_name}: accuracy {v.accuracy:.3f} vs chance {v.chance:.3f}, "
                  f"accuracy - chance {100 * v.estimate:+.1f} points [{100 * v.ci_low:+.1f}, {100 * v.ci_high:+.1f}], "
                  f"ceiling {v.ceiling:.3f}") if np.isfinite(v.accuracy) else f"{v.attack}"
        bound = f" (rules out more than {100 * v.ci_high:.1f} points)" if v.verdict == "no leak detected" else ""
        why = f"; {v.reasons}" if isinstance(v.reasons, str) and v.reasons and v.verdict != "leaks" else ""
        lines.append(f"verdict: {v.verdict}{bound} — {detail}{why}")
    return lines


def _device_name(device: str) -> str:
    """The machine the timings were taken on, in words (the deciding budget's time is for it)."""
    import os
    import platform

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    return (f"{cpus} CPU core{'s' if cpus != 1 else ''}, {platform.machine()}, {threads} torch "
            f"thread{'s' if threads != 1 else ''}")


def redraw_figures(root: Path, record: dict) -> None:
    """The report's galleries and feature-space figures, drawn again from what the run wrote
    with the audited model named as given and the classes by their folder names, one pair per
    attack run (:func:`re_analysis.report.audit.audit_figures` names them)."""
    import pandas as pd

    from .plots import feature_space_figure, save_figure
    from .report.audit import audit_figures

    results = pd.read_csv(root / "results.csv")
    names = record["class_names"]
    for r, title in zip(results.to_dict("records"), [t for _, t in audit_figures(root, "gallery", present=False)]):
        attack_dir = root / r["attack_dir"]
        gallery = root / "figures" / f"{Path(r['attack_dir']).name}-gallery.png"
        if not gallery.is_file():
            draw_gallery(attack_dir, gallery, names, title=title)
        emb = attack_dir / "embedding.npz"
        figure = root / "figures" / f"{Path(r['attack_dir']).name}-feature_space.png"
        if emb.is_file() and not figure.is_file():
            data = np.load(emb, allow_pickle=False)
            save_figure(feature_space_figure(data["embedding"], list(data["groups"]), data["labels"], names,
                                             title=title), figure)


def draw_gallery(attack_dir: Path, path: Path, class_names: list[str], title: str) -> Path:
    """The leakage gallery of an evaluated attack run (as the evaluation draws it), its classes
    named: each reconstruction beside its nearest private images and nearest training image."""
    import pandas as pd

    from .attacks.runner import load_attack_run
    from .evaluation import load_judge, leakage_gallery, training_images
    from .runs import run_record, target_record, target_splits

    res = load_attack_run(attack_dir)
    metrics = run_record(attack_dir, "metrics.json")
    target_rec = target_record(Path(res.info["target"]))
    evaluator = load_judge(metrics["eval_model"], target_rec, "cpu")
    memory = training_images(target_splits(target_rec), metrics.get("pixel_reject_quantile"))
    judged = pd.read_csv(attack_dir / "judgements.csv")
    return leakage_gallery(res.images, res.labels, evaluator, memory, judged, path, title=title,
                           class_names=class_names)


REPORT_NOTEBOOK = "audit_report.ipynb"


def render_report(root: Path) -> Path:
    """Execute ``notebooks/audit_report.ipynb`` on the audit's tables through papermill (as
    every chapter of the book) and write ``report.ipynb`` and ``report.html`` beside them."""
    import papermill as pm
    from traitlets.config import Config

    from .artifacts import atomic_output

    source = Path(__file__).resolve().parents[1] / "notebooks" / REPORT_NOTEBOOK
    if not source.is_file():
        raise ReAnalysisError(f"the report notebook {source} is missing: the audit renders notebooks/{REPORT_NOTEBOOK} of "
                              "the repository; install the suite from its repository (pip install -e .)")
    executed = root / "report.ipynb"
    with atomic_output(executed) as tmp:
        # IPC transport: the kernel's sockets are files of this user, not TCP ports (the kernel warns about
        # unencrypted TCP otherwise, on every run)
        pm.execute_notebook(str(source), str(tmp), parameters={"run_dir": str(root)}, kernel_name="python3",
                            progress_bar=False, cwd=str(source.parents[1]),
                            config=Config({"KernelManager": {"transport": "ipc"}}))
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
        >>> paths["report"].name  # doctest: +SKIP
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
            with quiet_jit():
                torch.jit.save(torch.jit.trace(target, torch.zeros(1, 1, 28, 28)), str(tmp))
    report = run_audit(AuditConfig(private=params["private"], public=params["public"], out=str(out / "audit"),
                                   model=str(model), image_size=28, channels=1, preset=preset), progress=progress)
    return {"folders": folders, "study": out / "study", "model": model, "report": report}
