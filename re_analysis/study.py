"""The grid runner: datasets x defenses x attacks x seeds -> one tidy results table.

A study preset (YAML, ``re_analysis/presets/``) names the dataset, the seeds, the
training/attack budgets, the defense variants (a label -> defense + parameters, which is
also how the ablations are expressed) and which (defense, attack) pairs to run. Every
step is cached in the run directory (targets, priors, attacks, metrics), so a re-run
recomputes nothing finished and a killed run resumes.

Outputs in ``out_dir``:

- ``results.csv``: one row per dataset/defense/attack/seed (every judge, the chance
  baseline, distribution metrics, the feature-space gap, budgets actually run);
- ``judgements.csv``: one row per reconstruction, every judge's verdict (0/1), keyed by
  dataset/defense/attack/seed/index, so defenses compare on paired reconstructions;
- ``natural.csv``: one row per private test image and target (correct or not);
- ``gap_samples.csv`` / ``separation.csv``: per reconstruction / per private feature;
- ``summary.csv``: per dataset/defense/attack, each number with its 95% interval;
- ``comparisons.csv``: each defense against ``none`` on paired items, per judge;
- ``tradeoff.csv``, ``verdicts.csv`` and ``verdict_summary.csv`` (the paper's claims);
- ``study.json``: the resolved preset.

Safety: the study directory is locked while a study runs in it (a second study waits, then
reuses everything). A cached step is trusted only after its files match their manifest: a
damaged run is moved aside (``NAME.damaged-<time>``, kept for inspection, named in
``study.log`` and on stderr) and recomputed; the tables do not mention the incident.

Example:
    >>> from re_analysis.study import load_preset, run_study
    >>> results = run_study(load_preset("smoke"), "runs/smoke")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm import tqdm

from .artifacts import (DamagedArtifactError, atomic_write_json, atomic_write_text, claim_run_dir, claim_scope,
                        config_hash, ensure_intact, read_json, remove_artifact, set_aside, verify_runs)
from .errors import ReAnalysisError
from .metrics.judges import JUDGE_TABLE
from .presets import preset_names as list_presets  # noqa: F401 (re-exported: study.list_presets)

log = logging.getLogger("re_analysis")
STUDY_LOG = "study.log"
TABLES_RECORD = "tables.json"  # the key of the inputs the derived tables were computed from

PRESET_KEYS = {"name", "description", "dataset", "root", "image_size", "seeds", "per_class", "train", "eval_model",
               "robust_model", "prior", "defenses", "attacks", "grid", "gap_figures", "device", "dataset_params",
               "embed", "classes", "claims", "workers", "primary_attack"}
ID_COLUMNS = ["dataset", "defense", "defense_name", "defense_params", "attack", "seed", "target_dir", "attack_dir"]
RESULT_COLUMNS = ID_COLUMNS + [
    # utility, and what Random Erasing hid in training (share of erased pixels that were ink, of ink erased)
    "natural_accuracy", "epsilon", "delta", "erased_foreground_share", "foreground_erased_share",
    # attack accuracy under every judge (open set unless "closed"), and how they agree
    "attack_accuracy_top1", "attack_accuracy_top1_closed", "attack_accuracy_top5", "attack_accuracy_robust",
    "attack_accuracy_pixel", "judges_all_accept", "judges_disagree", "eval_judged_public", "pixel_nearest_public",
    "pixel_rejected", "target_accuracy_on_reconstructions", "attack_failed",
    # what an attack gets for free: unoptimised prior samples the target labels as the class
    "chance_accuracy_top1", "chance_accuracy_top1_closed", "chance_accuracy_robust", "chance_accuracy_pixel",
    "chance_n", "chance_min_per_class",
    # each judge's acceptance of held-out private images: what a perfect reconstruction scores
    "ceiling_eval_hit", "ceiling_eval_hit_closed", "ceiling_robust_hit", "ceiling_pixel_hit",
    # distribution metrics in evaluation-model features
    "knn_distance", "fid", "fid_n_reconstructions", "precision", "recall", "density", "coverage",
    # the feature-space gap (target features) and the separation of private classes
    "mean_dist_private", "mean_dist_erased", "mean_dist_private_normalized", "mean_dist_erased_normalized",
    "fraction_nearer_erased", "coverage_private", "separation_margin", "separation_margin_test",
    "separation_nn_purity", "separation_silhouette",
    # the judges' own quality and the run's budget
    "eval_natural_accuracy", "robust_natural_accuracy", "robust_pgd_accuracy", "n_reconstructions",
    "n_classes_attacked", "iterations_fraction", "prior_steps_fraction", "reduced_budget", "prior_passed",
    "prior_quality",
]
METRICS = RESULT_COLUMNS[len(ID_COLUMNS):]
# judgements.csv verdict columns -> the results.csv column of their chance baseline
JUDGE_CHANCE = {j.column: j.chance for j in JUDGE_TABLE}


def load_preset(name_or_path: str | Path, **overrides: Any) -> dict[str, Any]:
    """A preset by name (``smoke``, ``quick``, ...) or YAML path, validated, with overrides applied.

    A preset may start from another with ``base: NAME_OR_PATH`` (a relative path is read
    from the preset's folder): its keys are merged over the base's, mappings key by key
    (``train: {epochs: 40}`` keeps the base's ``arch``), lists and scalars replaced.
    """
    preset = read_preset(name_or_path)
    for k, v in overrides.items():
        if v is not None:
            preset[k] = v
    return validate_preset(preset)


def read_preset(name_or_path: str | Path, _seen: tuple = ()) -> dict[str, Any]:
    """The raw mapping of a preset, with its ``base`` chain merged in (see :func:`load_preset`)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, where = path.read_text(), path.resolve()
    elif str(name_or_path) in list_presets():
        text, where = resources.files("re_analysis.presets").joinpath(f"{name_or_path}.yaml").read_text(), None
    else:
        raise ReAnalysisError(f"unknown preset {str(name_or_path)!r}; choose one of {', '.join(list_presets())} "
                              "or pass the path of a YAML file")
    preset = yaml.safe_load(text)
    if not isinstance(preset, dict):
        raise ReAnalysisError(f"preset {str(name_or_path)!r} is not a YAML mapping of settings")
    base = preset.pop("base", None)
    if base is None:
        return preset
    key = str(where or name_or_path)
    if key in _seen:
        raise ReAnalysisError(f"preset {str(name_or_path)!r} is its own base (through {' -> '.join(_seen)}); "
                              "break the cycle of `base:` entries")
    if where is not None and not Path(str(base)).is_absolute() and str(base).endswith((".yaml", ".yml")):
        base = where.parent / str(base)
    return deep_merge(read_preset(base, _seen + (key,)), preset)


def deep_merge(base: dict, child: dict) -> dict:
    """``child`` over ``base``: mappings merged key by key, anything else replaced.

    Example:
        >>> deep_merge({"train": {"arch": "cnn28s", "epochs": 20}, "seeds": [0, 1]}, {"train": {"epochs": 40}, "seeds": [5]})
        {'train': {'arch': 'cnn28s', 'epochs': 40}, 'seeds': [5]}
    """
    out = copy.deepcopy(base)
    for k, v in child.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


DEFENSE_SPEC_KEYS = {"defense", "params", "train", "seeds"}
# What a defense entry's `train` may change: the recipe, not what the study fixes for every target
FIXED_TRAIN_KEYS = {"dataset", "root", "image_size", "dataset_params", "defense", "defense_params", "seed", "device",
                    "role", "init_from"}
# `robust_model: {from_judge: true}`: the robust judge fine-tunes the open-set judge adversarially
# (its `epochs` are then fine-tuning epochs) instead of training from random weights
ROBUST_KEYS = {"from_judge"}


def training_overrides(where: str, train: Any, extra: set[str] = frozenset()) -> dict[str, Any]:
    """Training options of a preset (its ``train``, ``eval_model``, ``robust_model``, or a
    defense entry's own ``train`` over the preset's), checked by name against ``TrainConfig``.

    A method whose official recipe differs from the shared one declares it in its entry, e.g.
    Trap-MID's constant learning rate: ``trap-mid: {defense: trap-mid, train: {milestones: [1.0]}}``.
    """
    import dataclasses

    from .config import TrainConfig

    if train is None:
        return {}
    if not isinstance(train, dict):
        raise ReAnalysisError(f"{where} must be a mapping of training options, got {train!r}")
    allowed = ({f.name for f in dataclasses.fields(TrainConfig)} - FIXED_TRAIN_KEYS) | set(extra)
    unknown = set(train) - allowed
    if unknown:
        raise ReAnalysisError(f"{where}: unknown training option(s) {', '.join(sorted(unknown))}; "
                              f"choose from {', '.join(sorted(allowed))}")
    return dict(train)


def validate_preset(p: dict[str, Any]) -> dict[str, Any]:
    from .attacks import create_attack, list_attacks
    from .data import list_datasets
    from .defenses import create_defense, list_defenses

    p = copy.deepcopy(p)
    unknown = set(p) - PRESET_KEYS
    if unknown:
        raise ReAnalysisError(f"unknown preset key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(PRESET_KEYS))}")
    if p.get("dataset") not in list_datasets():
        raise ReAnalysisError(f"preset dataset {p.get('dataset')!r} is not one of {', '.join(list_datasets())}")
    seeds = p.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ReAnalysisError(f"preset seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    defenses = p.get("defenses") or {"none": {"defense": "none"}}
    for label, spec in defenses.items():
        spec = spec or {}
        unknown = set(spec) - DEFENSE_SPEC_KEYS
        if unknown:
            raise ReAnalysisError(f"preset defense {label!r} has unknown key(s) {', '.join(sorted(unknown))}; "
                                  f"a defense entry takes {', '.join(sorted(DEFENSE_SPEC_KEYS))}")
        for name in str(spec.get("defense", label)).split("+"):
            if name not in list_defenses():
                raise ReAnalysisError(f"preset defense {label!r} uses unknown defense {name!r}; "
                                      f"choose from {', '.join(list_defenses())}")
        defenses[label] = {"defense": spec.get("defense", label), "params": dict(spec.get("params") or {}),
                           "train": training_overrides(f"preset defense {label!r}: train", spec.get("train")),
                           "seeds": defense_seeds(label, spec.get("seeds"), seeds)}
        if defenses[label]["params"]:  # a misspelt parameter fails here, not when its target trains
            create_defense(defenses[label]["defense"], **defenses[label]["params"])
    attacks = p.get("attacks") or {"gmi": {}}
    for name in attacks:
        if name not in list_attacks():
            raise ReAnalysisError(f"preset attack {name!r} is not one of {', '.join(list_attacks())}")
        attacks[name] = dict(attacks[name] or {})
        create_attack(name, **attacks[name])  # a misspelt parameter fails here, not an hour into the study
    grid = p.get("grid") or [{"defenses": "all", "attacks": "all"}]
    pairs = []
    for block in grid:
        ds = list(defenses) if block.get("defenses", "all") == "all" else list(block["defenses"])
        ats = list(attacks) if block.get("attacks", "all") == "all" else list(block["attacks"])
        for d in ds:
            if d not in defenses:
                raise ReAnalysisError(f"grid names defense {d!r}, which the preset's defenses do not define")
            for a in ats:
                if a not in attacks:
                    raise ReAnalysisError(f"grid names attack {a!r}, which the preset's attacks do not define")
                if (d, a) not in pairs:
                    pairs.append((d, a))
    if "none" not in defenses:
        raise ReAnalysisError("a study needs the 'none' defense as its baseline; add `none: {}` to defenses")
    p.update({"seeds": seeds, "defenses": defenses, "attacks": attacks, "grid": grid, "pairs": pairs})
    p.setdefault("per_class", 5)
    p["train"] = training_overrides("preset train", p.get("train"))
    p["eval_model"] = training_overrides("preset eval_model", p.get("eval_model"))
    if p.get("robust_model", {}) is not False:
        p["robust_model"] = training_overrides("preset robust_model (false: no robust judge)", p.get("robust_model"),
                                               extra=ROBUST_KEYS)
    p.setdefault("prior", {})
    p.setdefault("classes", None)
    p.setdefault("claims", {})
    p.setdefault("primary_attack", next(iter(attacks)))
    if p["primary_attack"] not in attacks:
        raise ReAnalysisError(f"preset primary_attack {p['primary_attack']!r} is not one of its attacks "
                              f"({', '.join(attacks)}); it is the attack the verdict summary reads")
    classes = p["classes"]
    if classes is not None and not ((isinstance(classes, int) and not isinstance(classes, bool) and classes >= 2)
                                    or (isinstance(classes, list) and classes and all(isinstance(c, int) for c in classes))):
        raise ReAnalysisError(f"preset classes must be a number of private classes to attack (>= 2, a seeded choice "
                              f"per seed) or a list of class indices, got {classes!r}")
    p.setdefault("gap_figures", [])
    p.setdefault("device", "auto")
    p.setdefault("workers", 1)
    if not (isinstance(p["workers"], int) and not isinstance(p["workers"], bool) and p["workers"] >= 1):
        raise ReAnalysisError(f"preset workers must be a positive integer (processes that run independent steps "
                              f"at once), got {p['workers']!r}")
    p.setdefault("embed", True)
    p.setdefault("name", "custom")
    return p


def defense_seeds(label: str, given, seeds: list[int]) -> list[int]:
    """The seeds a defense label runs on: ``given`` (a subset of the preset's ``seeds``, so
    that depth goes where the power is needed, e.g. more seeds for claim 1's two arms) or
    every seed. ``none`` runs on every seed: every comparison is paired with it."""
    if given is None:
        return list(seeds)
    if label == "none" and set(given) != set(seeds):
        raise ReAnalysisError("the 'none' defense runs on every seed of the preset (every comparison pairs with it); "
                              "drop its `seeds` entry")
    if not isinstance(given, list) or not given or not set(given) <= set(seeds):
        raise ReAnalysisError(f"preset defense {label!r}: seeds must be a non-empty list drawn from the preset's "
                              f"seeds {seeds}, got {given!r}")
    return [s for s in seeds if s in given]


def runs_of(preset: dict[str, Any], label: str, seed: int) -> bool:
    """Whether the study trains (and attacks) defense ``label`` on ``seed``."""
    return seed in preset["defenses"][label].get("seeds", preset["seeds"])


def restrict(preset: dict[str, Any], defenses=None, attacks=None, seeds=None) -> dict[str, Any]:
    """The preset limited to some defense labels / attacks / seeds (a notebook's parameters).

    Pairs of the preset's grid that survive the filter are kept; a requested defense or
    attack the preset does not pair at all is run against every kept attack / defense.
    ``none`` always stays: it is the baseline.
    """
    p = copy.deepcopy(validate_preset({k: v for k, v in preset.items() if k != "pairs"}))
    if seeds is not None:
        p["seeds"] = list(seeds)
        for spec in p["defenses"].values():  # a label keeps its own seeds among those asked for
            spec["seeds"] = [s for s in spec["seeds"] if s in p["seeds"]] or list(p["seeds"])
        p["defenses"]["none"]["seeds"] = list(p["seeds"])
    keep_d = list(dict.fromkeys(["none", *defenses])) if defenses is not None else list(p["defenses"])
    keep_a = list(attacks) if attacks is not None else list(p["attacks"])
    for d in keep_d:
        p["defenses"].setdefault(d, {"defense": d})
    for a in keep_a:
        p["attacks"].setdefault(a, {})
    pairs = [(d, a) for d, a in p["pairs"] if d in keep_d and a in keep_a]
    for d in keep_d:
        for a in keep_a:
            if (not any(x == d for x, _ in pairs) or not any(y == a for _, y in pairs)) and (d, a) not in pairs:
                pairs.append((d, a))
    p["defenses"] = {k: v for k, v in p["defenses"].items() if k in keep_d}
    p["attacks"] = {k: v for k, v in p["attacks"].items() if k in keep_a}
    p["grid"] = [{"defenses": [d], "attacks": [a]} for d, a in pairs]
    p.pop("pairs")
    return validate_preset(p)


@dataclass
class StudyPaths:
    """Where a study keeps its runs. Names carry a short hash of the config that made them,
    so changing a preset's budget makes new runs instead of clashing with finished ones."""

    root: Path

    def target(self, label: str, seed: int, cfg) -> Path:
        return self.root / "targets" / f"{label}-s{seed}-{config_hash(cfg.resolved().to_dict(), 8)}"

    def eval_model(self, cfg) -> Path:
        key = cfg.resolved().to_dict()
        kind = "robust-eval-model" if key.get("adversarial") else "eval-model"
        if key.get("init_from"):  # the start's folder name carries its config hash; where the study lies does not count
            key["init_from"] = Path(key["init_from"]).name
        return self.root / "targets" / f"{kind}-{config_hash(key, 8)}"

    def attack(self, label: str, attack: str, seed: int, cfg) -> Path:
        from .attacks.base import attack_class

        key = {k: v for k, v in asdict(cfg).items() if k != "device"}
        key["target"] = Path(cfg.target).name
        # the attack's defaults too: a release that changes a method's default makes a new run
        # rather than clashing with the run of the old default (it once stopped a study)
        key["params"] = {**attack_class(attack).defaults, **cfg.params}
        return self.root / "attacks" / f"{label}--{attack}-s{seed}-{config_hash(key, 8)}"

    @property
    def cache(self) -> Path:
        return self.root / "cache"


def target_config(preset, label: str, seed: int):
    from .config import TrainConfig

    spec = preset["defenses"][label]
    return TrainConfig(dataset=preset["dataset"], root=preset.get("root"), image_size=preset.get("image_size"),
                       dataset_params=preset.get("dataset_params", {}), defense=spec["defense"],
                       defense_params=spec["params"], seed=seed, device=preset["device"],
                       **{**preset["train"], **spec.get("train", {})})


def eval_config(preset, robust: bool = False, paths: StudyPaths | None = None):
    """The evaluation model (open set: private and public classes, another architecture than
    the targets); ``robust=True``: its adversarially trained twin (``robust_model`` options
    on top of ``eval_model``'s, PGD per :data:`re_analysis.config.ROBUST_EVAL` by default;
    with ``from_judge: true``, adversarial fine-tuning of the open-set judge in ``paths``)."""
    from .config import ROBUST_EVAL, TrainConfig

    opts = {"epochs": 8, **preset["eval_model"]}
    if robust:
        opts.update(preset["robust_model"] or {})
        opts.setdefault("adversarial", dict(ROBUST_EVAL))
        if opts.pop("from_judge", False):
            if paths is None:
                raise ReAnalysisError("a robust judge fine-tuned from the open-set judge needs the study's paths")
            opts["init_from"] = str(paths.eval_model(eval_config(preset)))
    return TrainConfig(dataset=preset["dataset"], root=preset.get("root"), image_size=preset.get("image_size"),
                       dataset_params=preset.get("dataset_params", {}), role="eval", seed=opts.pop("seed", 0),
                       device=preset["device"], **opts)


def attacked_classes(preset, seed: int) -> tuple[int, ...] | None:
    """The private classes attacked at ``seed``: all (None), the preset's list, or a seeded
    choice of ``classes`` of them (the literature attacks subsets: GMI 300 of 1,000)."""
    classes = preset.get("classes")
    if classes is None or isinstance(classes, list):
        return tuple(classes) if classes else None
    from .data import load_dataset

    n = load_dataset(preset["dataset"], root=preset.get("root"), seed=seed, image_size=preset.get("image_size"),
                     **preset.get("dataset_params", {})).num_classes
    if classes >= n:
        return None
    import numpy as np

    return tuple(sorted(int(c) for c in np.random.default_rng(10_007 + seed).choice(n, classes, replace=False)))


def attack_config(preset, paths: StudyPaths, label: str, attack: str, seed: int):
    from .attacks import AttackConfig
    from .attacks.base import attack_class

    params = dict(preset["attacks"][attack])
    iterations = params.pop("iterations", None)
    prior = preset["prior"]
    steps = prior.get("steps")  # None: the prior paper's budget
    if attack_class(attack).prior_kind != "wgan-gp":  # KEDMI/PLG priors are trained per target
        steps = prior.get("target_steps", steps)
    return AttackConfig(attack=attack, target=str(paths.target(label, seed, target_config(preset, label, seed))),
                        classes=attacked_classes(preset, seed),
                        per_class=preset["per_class"], iterations=iterations, seed=seed, params=params,
                        prior_steps=steps, prior_seed=prior.get("seed", 0), prior_params=dict(prior.get("params") or {}),
                        device=preset["device"])


TEST_PREDICTIONS = "test_predictions.csv"


def train_target(preset, paths: StudyPaths, label: str, seed: int, progress: bool):
    """Train (or reuse) a target; its per-image verdicts on the private test split are kept
    beside it (``test_predictions.csv``) for paired natural-accuracy comparisons."""
    from .data import load_dataset, materialize
    from .models.inputs import predict_logits
    from .training import train

    cfg = target_config(preset, label, seed)
    res = train(cfg, paths.target(label, seed, cfg), progress=progress)
    pred_path = res.run_dir / TEST_PREDICTIONS
    if not pred_path.is_file():
        c = cfg.resolved()
        splits = load_dataset(c.dataset, root=c.root, seed=c.seed, image_size=c.image_size, **c.dataset_params)
        x, y = materialize(splits.private_test)
        pred = predict_logits(res.model, x).argmax(1)
        table = pd.DataFrame({"index": range(len(y)), "label": y.numpy(), "predicted": pred.numpy(),
                              "correct": (pred == y).numpy().astype(int)})
        atomic_write_text(pred_path, table.to_csv(index=False))
    return res


def train_eval_model(preset, paths: StudyPaths, progress: bool, robust: bool = False):
    from .training import train

    cfg = eval_config(preset, robust=robust, paths=paths)
    if cfg.init_from is not None:  # fine-tuned from the open-set judge: that one first (or wait for it)
        train_eval_model(preset, paths, progress)
    return train(cfg, paths.eval_model(cfg), progress=progress)


def robust_judge_dir(preset, paths: StudyPaths) -> Path | None:
    return None if preset["robust_model"] is False else paths.eval_model(eval_config(preset, robust=True, paths=paths))


GAP_KEYS = ("mean_dist_private", "mean_dist_erased", "mean_dist_private_normalized", "mean_dist_erased_normalized",
            "fraction_nearer_erased", "coverage_private", "separation_margin", "separation_nn_purity",
            "separation_silhouette")


def judged_by(metrics: dict, judge: Path, robust: Path | None) -> bool:
    """Whether cached evaluation ``metrics`` came from these judges (a preset that changes a
    judge re-judges its attacks). Compared by folder name, which carries the judge's config
    hash, so a study folder that moved keeps its evaluations."""
    def name(p):
        return Path(p).name if p else None
    return name(metrics.get("eval_model")) == name(judge) and name(metrics.get("robust_model")) == name(robust)


def attack_evaluate(preset, paths: StudyPaths, label: str, attack: str, seed: int, progress: bool) -> dict:
    """Attack one target, judge the reconstructions and measure the gap (each step cached)."""
    from .attacks import run_attack
    from .evaluation import analyze_gap, evaluate_attack

    cfg = attack_config(preset, paths, label, attack, seed)
    out = paths.attack(label, attack, seed, cfg)
    ensure_intact(out)  # a damaged cached step is recomputed, not trusted
    res = run_attack(cfg, out, cache_root=paths.cache, progress=progress)
    metrics_path = out / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    judge, robust = paths.eval_model(eval_config(preset)), robust_judge_dir(preset, paths)
    if ("attack_accuracy_top1" not in metrics or "ceiling_eval_hit" not in metrics
            or not (out / "judgements.csv").is_file() or not (out / "chance_judgements.csv").is_file()
            or not judged_by(metrics, judge, robust)):
        metrics = evaluate_attack(out, judge, out, robust_model=robust)
    figure = [label, attack] in [list(x) for x in preset["gap_figures"]] and seed == preset["seeds"][0]
    gap_path = out / "gap.json"
    gap = read_json(gap_path) if gap_path.is_file() and (out / "gap_samples.csv").is_file() else None
    if gap is None or (figure and preset["embed"] and not (out / "feature_space.png").is_file()):
        gap = analyze_gap(cfg.target, out, out, seed=seed, embed=figure and preset["embed"])
    info = res.info
    budget = {k: info.get(k) for k in ("iterations_fraction", "prior_steps_fraction")}
    budget.update(prior_check(info, paths.eval_model(eval_config(preset))))
    budget["reduced_budget"] = reduced_budget(info)
    return {**metrics, **{k: gap.get(k) for k in GAP_KEYS}, **budget,
            "n_classes_attacked": len(info["classes"]),
            "target_accuracy_on_reconstructions": info["target_accuracy_on_reconstructions"],
            "target_dir": str(Path(cfg.target).relative_to(paths.root)), "attack_dir": str(out.relative_to(paths.root))}


def reduced_budget(attack_info: dict) -> bool:
    """Whether any budget knob of the attack (iterations, candidates, students, sphere points,
    transforms, ... as its ``paper_budget`` lists them) or of its prior ran below its paper's value."""
    fractions = [row["fraction"] for row in (attack_info.get("budget") or {}).values()]
    fractions += [attack_info[k] for k in ("iterations_fraction", "prior_steps_fraction")
                  if attack_info.get(k) is not None]
    return bool(fractions) and min(fractions) < 1


def prior_check(attack_info: dict, eval_dir: Path) -> dict:
    """The attack's prior checked on held-out public images in the evaluation model's
    features (:func:`re_analysis.attacks.record_prior_quality`, cached beside the prior):
    ``prior_quality`` (FID ratio, 1 = as close as real public images) and ``prior_passed``
    (within the documented floors). Empty for an attack without a prior."""
    if not attack_info.get("prior"):
        return {"prior_quality": None, "prior_passed": None}
    from .attacks import load_prior, record_prior_quality

    q = record_prior_quality(load_prior(attack_info["prior"]), eval_dir)
    return {"prior_quality": q.get("fid_ratio"), "prior_passed": q.get("passed")}


@claim_scope()  # the study directory stays locked until the study returns
def run_study(preset: dict[str, Any] | str, out_dir: str | Path, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the whole grid and write the tables; returns the results table.

    Damaged cached runs (see :func:`re_analysis.artifacts.verify_runs`) are set aside and
    recomputed; each incident is logged to ``out_dir/study.log`` and stderr.
    """
    if isinstance(preset, (str, Path)):
        preset = load_preset(preset)
    preset = validate_preset({k: v for k, v in preset.items() if k != "pairs"})
    paths = StudyPaths(Path(out_dir))
    claim_run_dir(paths.root, {}, kind="study")  # waits while another study runs here
    t0 = time.perf_counter()
    with study_log(paths.root):
        for problem in verify_runs(paths.root).problems:
            if problem.recorded:  # files the manifest does not vouch for are left to the loaders' checks
                set_aside_damage(problem.path, problem.run_dir, paths.root, problem.problem)
        tables = recompute_damaged(lambda: run_grid(preset, paths, progress), paths.root)
    write_tables(tables, paths.root, preset)
    results = tables.results
    record = {k: v for k, v in preset.items() if k != "pairs"}
    record["seconds_this_call"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(paths.root / "study.json", record)
    return results


@contextlib.contextmanager
def study_log(root: Path):
    """Log warnings (damage set aside, waiting for a busy run) to ``root/study.log`` and stderr."""
    handlers = [logging.FileHandler(root / STUDY_LOG, encoding="utf-8", delay=True)]  # created on the first incident
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if not logging.getLogger().handlers:  # nobody configured logging: say it on stderr too
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[1].setFormatter(logging.Formatter("re-analysis: %(message)s"))
    for h in handlers:
        log.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def set_aside_damage(path: Path, run_dir: Path | None, root: Path, problem: str) -> Path | None:
    """Move the run holding a damaged ``path`` aside (or the file itself when it belongs to the
    study directory), so the step that made it runs again."""
    root = Path(os.path.abspath(root))
    run_dir = Path(os.path.abspath(run_dir)) if run_dir is not None else None
    target = run_dir if run_dir is not None and root in run_dir.parents else Path(os.path.abspath(path))
    if not target.exists():
        if target == run_dir:
            return None  # already set aside for another of its files
        remove_artifact(target)  # a missing file of the study directory itself: forget it, rewrite it
        log.warning("damaged %s (%s): dropped from the manifest; recomputing it", path, problem)
        return None
    moved = set_aside(target)
    log.warning("damaged %s (%s): set aside as %s; recomputing it", path, problem, moved)
    return moved


def recompute_damaged(step, root: Path):
    """``step()``, again after each damaged run it meets under ``root`` has been set aside."""
    seen = set()
    while True:
        try:
            return step()
        except DamagedArtifactError as err:
            path = Path(os.path.abspath(err.path))
            if Path(os.path.abspath(root)) not in path.parents or path in seen:
                raise  # not ours to move, or damaged again right after being recomputed
            seen.add(path)
            set_aside_damage(path, err.run_dir, root, err.problem)


@dataclass
class StudyTables:
    """Everything a study measured: one row per run, and per-item tables for paired statistics."""

    results: pd.DataFrame
    judgements: pd.DataFrame
    natural: pd.DataFrame
    gap: pd.DataFrame
    separation: pd.DataFrame
    chance: pd.DataFrame = field(default_factory=pd.DataFrame)  # per unoptimised prior sample, every judge


def _keyed(table: pd.DataFrame, **keys) -> pd.DataFrame:
    return table.assign(**keys)[list(keys) + [c for c in table.columns if c not in keys]]


def shared_priors(preset: dict[str, Any], paths: StudyPaths) -> list:
    """The priors that no target shapes (GMI's WGAN-GP, trained on the public data only),
    one per distinct configuration among the preset's attacks: the very configs the attack
    steps resolve (:func:`re_analysis.attacks.runner.prior_config`)."""
    from .attacks.base import attack_class
    from .attacks.runner import prior_config

    out = []
    for attack in dict.fromkeys(a for _, a in preset["pairs"]):
        if attack_class(attack).prior_kind != "wgan-gp":
            continue
        cfg = prior_config(attack_config(preset, paths, "none", attack, preset["seeds"][0]), "wgan-gp", preset)
        if cfg not in out:
            out.append(cfg)
    return out


def _run_step(preset: dict[str, Any], root: str, step: tuple, threads: int) -> None:
    """One independent step of the grid, in a worker process (its result lands in the cache)."""
    import torch

    torch.set_num_threads(threads)
    paths = StudyPaths(Path(root))
    kind = step[0]
    if kind == "eval":
        train_eval_model(preset, paths, False, robust=step[1])
    elif kind == "target":
        train_target(preset, paths, step[1], step[2], False)
    elif kind == "prior":
        from .attacks.priors import train_prior

        train_prior(step[1], cache_root=paths.cache / "priors", device=preset["device"], progress=False)
    else:
        attack_evaluate(preset, paths, step[1], step[2], step[3], False)


def study_phases(preset: dict[str, Any], paths: StudyPaths) -> tuple[list[tuple], list[tuple]]:
    """The steps of a study in the order workers take them: (training, attacks).

    Longest first: a shared prior (at its paper's budget the study's longest serial step)
    runs beside the judges, not after them; then the judges, then every target."""
    labels = sorted({d for d, _ in preset["pairs"]} | {"none"}, key=list(preset["defenses"]).index)
    phase1 = [("prior", cfg) for cfg in shared_priors(preset, paths)]
    phase1 += [("eval", False)] + ([("eval", True)] if preset["robust_model"] is not False else [])
    phase1 += [("target", label, seed) for seed in preset["seeds"] for label in labels if runs_of(preset, label, seed)]
    phase2 = [("attack", d, a, s) for s in preset["seeds"] for d, a in preset["pairs"] if runs_of(preset, d, s)]
    return phase1, phase2


def run_in_workers(preset: dict[str, Any], paths: StudyPaths, progress: bool) -> None:
    """Fill the cache with ``preset["workers"]`` processes at once, one torch thread each.

    Two independent processes keep 2 CPU cores busier than one process with two threads
    (small convolutions parallelise poorly inside one process). Phase 1 trains the shared
    priors, the judges and every target; phase 2 attacks and evaluates (order:
    :func:`study_phases`). Each step claims its run directory (:func:`re_analysis.artifacts.claim_run_dir`), so a step that needs
    another's result waits for it and then reuses it. Thread counts change the last digits
    of floating-point sums, so a study run with other ``workers`` may differ in those digits.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // preset["workers"])
    phase1, phase2 = study_phases(preset, paths)
    with cf.ProcessPoolExecutor(preset["workers"], mp_context=mp.get_context("spawn")) as pool:
        for phase, name in ((phase1, "train"), (phase2, "attack")):
            futures = [pool.submit(_run_step, preset, str(paths.root), step, threads) for step in phase]
            for f in tqdm(cf.as_completed(futures), total=len(futures), desc=f"study {preset['name']}: {name}",
                          disable=not progress):
                f.result()


def run_grid(preset: dict[str, Any], paths: StudyPaths, progress: bool) -> StudyTables:
    """Every step of the grid (cached steps are reused); returns the study's tables."""
    if preset["workers"] > 1:
        run_in_workers(preset, paths, progress)
    train_eval_model(preset, paths, progress)
    if preset["robust_model"] is not False:
        train_eval_model(preset, paths, progress, robust=True)
    labels_needed = sorted({d for d, _ in preset["pairs"]} | {"none"}, key=list(preset["defenses"]).index)
    rows, judged, natural, gaps, seps, chances = [], [], [], [], [], []
    steps = [(d, a, s) for s in preset["seeds"] for d, a in preset["pairs"] if runs_of(preset, d, s)]
    targets = [(label, seed) for seed in preset["seeds"] for label in labels_needed if runs_of(preset, label, seed)]
    bar = tqdm(total=len(targets) + len(steps), desc=f"study {preset['name']}", disable=not progress)
    trained = {}
    dataset = preset["dataset"]
    for label, seed in targets:
        res = train_target(preset, paths, label, seed, progress=False)
        trained[label, seed] = res.metrics
        natural.append(_keyed(pd.read_csv(res.run_dir / TEST_PREDICTIONS), dataset=dataset, defense=label, seed=seed))
        bar.update()
    for label, attack, seed in steps:
        m = attack_evaluate(preset, paths, label, attack, seed, progress=False)
        t = trained[label, seed]
        spec = preset["defenses"][label]
        rows.append({"dataset": dataset, "defense": label, "defense_name": spec["defense"],
                     "defense_params": yaml.safe_dump(spec["params"], default_flow_style=True).strip() if spec["params"] else "",
                     "attack": attack, "seed": seed, "natural_accuracy": t["natural_accuracy"],
                     "epsilon": t.get("epsilon"), "delta": t.get("delta"),
                     "erased_foreground_share": t.get("erased_foreground_share"),
                     "foreground_erased_share": t.get("foreground_erased_share"),
                     **{k: m.get(k) for k in RESULT_COLUMNS if k in m}})
        out = paths.root / m["attack_dir"]
        keys = {"dataset": dataset, "defense": label, "attack": attack, "seed": seed}
        judged.append(_keyed(pd.read_csv(out / "judgements.csv").drop(columns=["seed"], errors="ignore"), **keys))
        gaps.append(_keyed(pd.read_csv(out / "gap_samples.csv"), **keys))
        chances.append(_keyed(pd.read_csv(out / "chance_judgements.csv").drop(columns=["seed"], errors="ignore"), **keys))
        if (out / "separation_samples.csv").is_file() and not any(
                (x["defense"].iloc[0], x["seed"].iloc[0]) == (label, seed) for x in seps):
            seps.append(_keyed(pd.read_csv(out / "separation_samples.csv"), dataset=dataset, defense=label, seed=seed))
        bar.update()
    bar.close()
    cat = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()  # noqa: E731
    return StudyTables(pd.DataFrame(rows, columns=RESULT_COLUMNS), cat(judged), cat(natural), cat(gaps), cat(seps),
                       cat(chances))


def summarize(results: pd.DataFrame, judgements: pd.DataFrame | None = None,
              natural: pd.DataFrame | None = None, n_resamples: int = 4000) -> pd.DataFrame:
    """One row per dataset/defense/attack: every metric's mean over seeds and standard
    deviation (``_std``); attack accuracy under every judge and natural accuracy also with
    their 95% hierarchical bootstrap interval (``_ci_low``, ``_ci_high``: seeds, then
    reconstructions or test images within seeds) when the per-item tables are given."""
    from .metrics.stats import interval_table

    num = [c for c in METRICS if c in results and pd.to_numeric(results[c], errors="coerce").notna().any()]
    numeric = results[["dataset", "defense", "attack"] + num].copy()
    for c in num:
        numeric[c] = pd.to_numeric(numeric[c], errors="coerce")
    g = numeric.groupby(["dataset", "defense", "attack"], sort=False)[num]
    mean, std = g.mean().add_suffix("_mean"), g.std(ddof=1).add_suffix("_std")
    out = pd.concat([mean, std], axis=1)
    out["n_seeds"] = g.size()
    cols = [c for m in num for c in (f"{m}_mean", f"{m}_std")] + ["n_seeds"]
    out = out[cols].reset_index()
    keys = ["dataset", "defense", "attack"]
    if judgements is not None and not judgements.empty:
        judged = [c for c in JUDGE_CHANCE if c in judgements]
        ci = interval_table(judgements, judged, keys, unit="label" if "label" in judgements else None,
                            n_resamples=n_resamples)
        keep = keys + [f"{c}_{end}" for c in judged for end in ("ci_low", "ci_high")]
        out = out.merge(ci[keep], on=keys, how="left")
    if natural is not None and not natural.empty:
        ci = interval_table(natural, ["correct"], ["dataset", "defense"], n_resamples=n_resamples)
        ci = ci.rename(columns={"correct_ci_low": "natural_accuracy_ci_low", "correct_ci_high": "natural_accuracy_ci_high"})
        out = out.merge(ci[["dataset", "defense", "natural_accuracy_ci_low", "natural_accuracy_ci_high"]],
                        on=["dataset", "defense"], how="left")
    return out


def comparisons(judgements: pd.DataFrame, natural: pd.DataFrame | None = None,
                n_resamples: int = 4000) -> pd.DataFrame:
    """Each defense against ``none`` on paired items, per dataset, attack and judge
    (reconstructions: same seed and initial latents; natural accuracy: same test images):
    difference, 95% interval, p-value and "no measurable difference" where the interval
    covers zero (:func:`re_analysis.evaluation.compare_with_none`)."""
    from .evaluation import compare_with_none

    parts = [compare_with_none(judgements, column=col, n_resamples=n_resamples)
             for col in JUDGE_CHANCE if col in judgements]
    if natural is not None and not natural.empty:
        nat = compare_with_none(natural.assign(attack="(natural accuracy)"), column="correct", n_resamples=n_resamples)
        parts.append(nat.assign(judge="natural accuracy"))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def tradeoff_ratio(attack_drop: float, natural_drop: float) -> float:
    """Attack-accuracy points removed per point of natural accuracy lost.

    A natural-accuracy drop of zero or less is no utility cost: the ratio is then the limit
    of ``attack_drop / natural_drop`` as the cost goes to zero from above, ``+inf`` when
    attack accuracy went down (privacy at no utility cost, which ranks first), ``-inf`` when
    it went up, and 0 when it did not move.

    Example:
        >>> tradeoff_ratio(40.0, 2.0), tradeoff_ratio(10.0, 0.0), tradeoff_ratio(10.0, -0.5)
        (20.0, inf, inf)
    """
    if natural_drop > 0:
        return attack_drop / natural_drop
    if attack_drop == 0:
        return 0.0
    return float("inf") if attack_drop > 0 else float("-inf")


def tradeoff(results: pd.DataFrame) -> pd.DataFrame:
    """Privacy-utility trade-off of each defense against no defense, per dataset and attack.

    Definition. For a defense D, an attack A and a seed s, the drops are in percentage
    points against the undefended target of the same seed attacked the same way:
    ``attack_acc_drop = 100 (acc_A(none, s) - acc_A(D, s))`` (top-1 attack accuracy) and
    ``natural_acc_drop = 100 (nat(none, s) - nat(D, s))``. Both are averaged over the seeds
    (``*_std``: their standard deviation over seeds), and the trade-off is the ratio of the
    means, ``tradeoff = mean attack_acc_drop / mean natural_acc_drop``: attack-accuracy points
    removed per point of natural accuracy lost (higher is better). When the mean natural
    drop is zero or negative the defense costs no utility, and ``tradeoff`` is ``+inf`` if
    it lowered attack accuracy (the best case, ranked first), ``-inf`` if it raised it, 0 if
    neither moved (:func:`tradeoff_ratio`). Rows are ranked by ``tradeoff``, best first,
    within each dataset and attack.
    """
    columns = ["dataset", "defense", "attack", "attack_acc_drop", "natural_acc_drop", "tradeoff",
               "attack_acc_drop_std", "natural_acc_drop_std", "n_seeds"]
    base = results[results["defense"] == "none"].set_index(["dataset", "attack", "seed"])
    rows = []
    for _, r in results[results["defense"] != "none"].iterrows():
        key = (r["dataset"], r["attack"], r["seed"])
        if key not in base.index:
            continue
        b = base.loc[key]
        rows.append({"dataset": r["dataset"], "defense": r["defense"], "attack": r["attack"], "seed": r["seed"],
                     "attack_acc_drop": 100 * (b["attack_accuracy_top1"] - r["attack_accuracy_top1"]),
                     "natural_acc_drop": 100 * (b["natural_accuracy"] - r["natural_accuracy"])})
    if not rows:
        return pd.DataFrame(columns=columns)
    g = pd.DataFrame(rows).groupby(["dataset", "defense", "attack"], sort=False)
    out = g[["attack_acc_drop", "natural_acc_drop"]].mean()
    out["tradeoff"] = [tradeoff_ratio(a, n) for a, n in zip(out["attack_acc_drop"], out["natural_acc_drop"])]
    out = out.join(g[["attack_acc_drop", "natural_acc_drop"]].std(ddof=1).add_suffix("_std"))
    out["n_seeds"] = g.size()
    out = out.reset_index().sort_values(["dataset", "attack", "tradeoff"], ascending=[True, True, False],
                                        kind="stable")
    return out[columns].reset_index(drop=True)


def judge_ceilings_of(results: pd.DataFrame) -> dict[str, float]:
    """Judge column -> its mean acceptance of held-out private images over the study's runs."""
    return {j: float(pd.to_numeric(results[f"ceiling_{j}"], errors="coerce").mean())
            for j in JUDGE_CHANCE if f"ceiling_{j}" in results and pd.to_numeric(results[f"ceiling_{j}"],
                                                                                   errors="coerce").notna().any()}


VERDICT_RULES = 2  # bump when the verdict rules change: cached verdict tables are then recomputed


def write_tables(tables: StudyTables | pd.DataFrame, root: Path, preset: dict | None = None) -> None:
    """Write every table of the study (a bare results frame writes results, summary and trade-off)."""
    from .verdicts import Roles, claim_verdicts, infer_roles, summarize_verdicts

    if isinstance(tables, pd.DataFrame):
        tables = StudyTables(tables, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    results = tables.results
    texts = {"results": results.to_csv(index=False)}
    for name, frame in (("judgements", tables.judgements), ("natural", tables.natural),
                        ("gap_samples", tables.gap), ("separation", tables.separation), ("chance", tables.chance)):
        if not frame.empty:
            texts[name] = frame.to_csv(index=False)
    # the derived tables (bootstraps: seconds to minutes) are a function of these texts and the
    # claims' roles: when neither changed since the last call, the tables on disk stand
    key = config_hash({"tables": {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()},
                       "claims": (preset or {}).get("claims") or {}, "primary": (preset or {}).get("primary_attack"),
                       "rules": VERDICT_RULES})
    derived = ["summary", "tradeoff"] + (["comparisons", "verdicts", "verdict_summary"] if "judgements" in texts else [])
    done = root / TABLES_RECORD
    if (done.is_file() and read_json(done).get("key") == key
            and all((root / f"{n}.csv").is_file() for n in list(texts) + derived)):
        return
    for name, text in texts.items():
        atomic_write_text(root / f"{name}.csv", text)
    atomic_write_text(root / "summary.csv", summarize(results, tables.judgements, tables.natural).to_csv(index=False))
    atomic_write_text(root / "tradeoff.csv", tradeoff(results).to_csv(index=False))
    if tables.judgements.empty:
        atomic_write_json(done, {"key": key})
        return
    atomic_write_text(root / "comparisons.csv", comparisons(tables.judgements, tables.natural).to_csv(index=False))
    names = dict(zip(results["defense"], results["defense_name"]))
    claims = (preset or {}).get("claims") or {}
    roles = Roles(**claims) if claims else infer_roles(results["defense"].unique(), names)
    verdicts = claim_verdicts(tables.judgements, tables.natural, tables.gap, tables.separation, tables.chance, roles,
                              ceilings=judge_ceilings_of(results))
    atomic_write_text(root / "verdicts.csv", verdicts.to_csv(index=False))
    primary = (preset or {}).get("primary_attack")
    atomic_write_text(root / "verdict_summary.csv", summarize_verdicts(verdicts, attack=primary).to_csv(index=False))
    atomic_write_json(done, {"key": key})


def load_results(out_dir: str | Path) -> pd.DataFrame:
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise ReAnalysisError(f"no results.csv in {out_dir}; run `re-analysis study --out {out_dir}` first")
    return pd.read_csv(path)
