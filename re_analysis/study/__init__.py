"""The grid runner: datasets x defenses x attacks x seeds -> one tidy results table.

Three rooms: :mod:`re_analysis.study.preset` (what a preset may say, inheritance, checks),
:mod:`re_analysis.study.tables` (the study's tables from its per-item records) and this
module (the run layout and the orchestration: targets, priors, attacks, workers, resume).

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
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm import tqdm

from ..artifacts import (DamagedArtifactError, atomic_write_json, atomic_write_text, claim_run_dir, claim_scope,
                        config_hash, ensure_intact, read_json, remove_artifact, set_aside, verify_runs)
from ..errors import ReAnalysisError
from ..gap import GAP_KEYS
from ..presets import preset_names as list_presets  # noqa: F401 (re-exported: study.list_presets)
# the study's public names (the API chapter's): the rest lives in .preset, .tables, .units, .scheduler
from .preset import (Preset, deep_merge, defense_seeds, load_preset, restrict, runs_of, thaw,  # noqa: F401
                     validate_preset)
from .tables import (StudyTables, comparisons, load_results, result_columns, summarize, tradeoff,  # noqa: F401
                     tradeoff_ratio, with_keys, write_tables)

log = logging.getLogger("re_analysis")
STUDY_LOG = "study.log"

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
        from ..attacks.base import attack_class

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
    """The training config of defense ``label`` on ``seed``: the preset's shared recipe, then
    what the defense's official recipe changes (:attr:`Defense.train_recipe`), then the
    entry's own ``train``."""
    from ..config import TrainConfig
    from ..defenses import create_defense

    spec = preset.defenses[label]
    recipe = create_defense(spec["defense"], **spec["params"]).train_recipe
    return TrainConfig(dataset=preset.dataset, root=preset.root, image_size=preset.image_size,
                       dataset_params=thaw(preset.dataset_params), defense=spec["defense"],
                       defense_params=thaw(spec["params"]), seed=seed, device=preset.device,
                       **thaw({**preset.train, **recipe, **spec.get("train", {})}))


def eval_config(preset, robust: bool = False, paths: StudyPaths | None = None):
    """The evaluation model (open set: private and public classes, another architecture than
    the targets); ``robust=True``: its adversarially trained twin (``robust_model`` options
    on top of ``eval_model``'s, PGD per :data:`re_analysis.config.ROBUST_EVAL` by default;
    with ``from_judge: true``, adversarial fine-tuning of the open-set judge in ``paths``)."""
    from ..config import ROBUST_EVAL, TrainConfig

    opts = {"epochs": 8, **thaw(preset.eval_model)}
    if robust:
        opts.update(thaw(preset.robust_model or {}))
        opts.setdefault("adversarial", dict(ROBUST_EVAL))
        if opts.pop("from_judge", False):
            if paths is None:
                raise ReAnalysisError("a robust judge fine-tuned from the open-set judge needs the study's paths")
            opts["init_from"] = str(paths.eval_model(eval_config(preset)))
    return TrainConfig(dataset=preset.dataset, root=preset.root, image_size=preset.image_size,
                       dataset_params=thaw(preset.dataset_params), role="eval", seed=opts.pop("seed", 0),
                       device=preset.device, **opts)


def attacked_classes(preset, seed: int) -> tuple[int, ...] | None:
    """The private classes attacked at ``seed``: all (None), the preset's list, or a seeded
    choice of ``classes`` of them (the literature attacks subsets: GMI 300 of 1,000)."""
    classes = preset.classes
    if classes is None or isinstance(classes, list):
        return tuple(classes) if classes else None
    from ..data import load_dataset

    n = load_dataset(preset.dataset, root=preset.root, seed=seed, image_size=preset.image_size,
                     **preset.dataset_params).num_classes
    if classes >= n:
        return None
    import numpy as np

    return tuple(sorted(int(c) for c in np.random.default_rng(10_007 + seed).choice(n, classes, replace=False)))


def attack_config(preset, paths: StudyPaths, label: str, attack: str, seed: int, target: str | Path | None = None):
    """The attack run of ``attack`` on the target of ``label`` and ``seed`` (``target``: another
    finished run directory to attack instead, e.g. an audited model)."""
    from ..attacks import AttackConfig
    from ..attacks.base import attack_class

    params = thaw(preset.attacks[attack])
    iterations = params.pop("iterations", None)
    per_class = params.pop("per_class", preset.per_class)  # an attack may run its own restarts (GMI's best of 5)
    prior = preset.prior
    steps = prior.get("steps")  # None: the prior paper's budget
    if attack_class(attack).prior_kind != "wgan-gp":  # KEDMI/PLG priors are trained per target
        steps = prior.get("target_steps", steps)
    target = target if target is not None else paths.target(label, seed, target_config(preset, label, seed))
    return AttackConfig(attack=attack, target=str(target),
                        classes=attacked_classes(preset, seed),
                        per_class=per_class, iterations=iterations, seed=seed, params=params,
                        prior_steps=steps, prior_seed=prior.get("seed", 0), prior_params=dict(prior.get("params") or {}),
                        device=preset.device)


TEST_PREDICTIONS = "test_predictions.csv"


def train_target(preset, paths: StudyPaths, label: str, seed: int, progress: bool):
    """Train (or reuse) a target; its per-image verdicts on the private test split are kept
    beside it (``test_predictions.csv``) for paired natural-accuracy comparisons."""
    from ..data import load_dataset, materialize
    from ..models.inputs import predict_logits
    from ..training import train

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
    from ..training import train

    cfg = eval_config(preset, robust=robust, paths=paths)
    if cfg.init_from is not None:  # fine-tuned from the open-set judge: that one first (or wait for it)
        train_eval_model(preset, paths, progress)
    return train(cfg, paths.eval_model(cfg), progress=progress)


def robust_judge_dir(preset, paths: StudyPaths) -> Path | None:
    return None if not preset.robust else paths.eval_model(eval_config(preset, robust=True, paths=paths))


def judged_by(metrics: dict, judge: Path, robust: Path | None) -> bool:
    """Whether cached evaluation ``metrics`` came from these judges (a preset that changes a
    judge re-judges its attacks). Compared by folder name, which carries the judge's config
    hash, so a study folder that moved keeps its evaluations."""
    def name(p):
        return Path(p).name if p else None
    return name(metrics.get("eval_model")) == name(judge) and name(metrics.get("robust_model")) == name(robust)


def attack_evaluate(preset, paths: StudyPaths, label: str, attack: str, seed: int, progress: bool,
                    target: str | Path | None = None) -> dict:
    """Attack one target (``target``: a run directory to attack instead of the study's own),
    judge the reconstructions and measure the gap (each step cached)."""
    from ..attacks import run_attack
    from ..evaluation import evaluate_attack
    from ..gap import analyze_gap

    cfg = attack_config(preset, paths, label, attack, seed, target)
    out = paths.attack(label, attack, seed, cfg)
    ensure_intact(out)  # a damaged cached step is recomputed, not trusted
    res = run_attack(cfg, out, cache_root=paths.cache, progress=progress)
    metrics_path = out / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    judge, robust = paths.eval_model(eval_config(preset)), robust_judge_dir(preset, paths)
    if ("attack_accuracy_top1" not in metrics or "ceiling_top1" not in metrics
            or not (out / "judgements.csv").is_file() or not (out / "chance_judgements.csv").is_file()
            or not judged_by(metrics, judge, robust)):
        metrics = evaluate_attack(out, judge, out, robust_model=robust)
    figure = [label, attack] in [list(x) for x in preset.gap_figures] and seed == preset.seeds[0]
    gap_path = out / "gap.json"
    gap = read_json(gap_path) if gap_path.is_file() and (out / "gap_samples.csv").is_file() else None
    if gap is None or (figure and preset.embed and not (out / "feature_space.png").is_file()):
        gap = analyze_gap(cfg.target, out, out, seed=seed, embed=figure and preset.embed)
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
    from ..attacks import load_prior, record_prior_quality

    q = record_prior_quality(load_prior(attack_info["prior"]), eval_dir)
    return {"prior_quality": q.get("fid_ratio"), "prior_passed": q.get("passed")}


@claim_scope()  # the study directory stays locked until the study returns
def run_study(preset: Preset | str, out_dir: str | Path, progress: bool = True,
              scheduler: str | None = None) -> pd.DataFrame:
    """Run (or resume) the whole grid and write the tables; returns the results table.

    ``preset.workers`` processes share the steps on this machine (a dask ``LocalCluster``);
    ``scheduler``: the address of a running dask scheduler whose workers see ``out_dir``.

    Damaged cached runs (see :func:`re_analysis.artifacts.verify_runs`) are set aside and
    recomputed; each incident is logged to ``out_dir/study.log`` and stderr.
    """
    if isinstance(preset, (str, Path)):
        preset = load_preset(preset)
    preset = validate_preset(preset)
    paths = StudyPaths(Path(out_dir))
    claim_run_dir(paths.root, {}, kind="study")  # waits while another study runs here
    t0 = time.perf_counter()
    with study_log(paths.root):
        for problem in verify_runs(paths.root).problems:
            if problem.recorded:  # files the manifest does not vouch for are left to the loaders' checks
                set_aside_damage(problem.path, problem.run_dir, paths.root, problem.problem)
        tables = recompute_damaged(lambda: run_grid(preset, paths, progress, scheduler), paths.root)
    write_tables(tables, paths.root, preset)
    from .units import run_units

    run_units(preset, paths.root, progress=False)  # every step is cached: this only records the finished units
    results = tables.results
    record = preset.to_dict()
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


def shared_priors(preset: Preset, paths: StudyPaths) -> list:
    """The priors that no target shapes (GMI's WGAN-GP, trained on the public data only),
    one per distinct configuration among the preset's attacks: the very configs the attack
    steps resolve (:func:`re_analysis.attacks.runner.prior_config`)."""
    from ..attacks.base import attack_class
    from ..attacks.runner import prior_config

    out = []
    for attack in dict.fromkeys(a for _, a in preset.pairs):
        if attack_class(attack).prior_kind != "wgan-gp":
            continue
        cfg = prior_config(attack_config(preset, paths, "none", attack, preset.seeds[0]), "wgan-gp", preset.to_dict())
        if cfg not in out:
            out.append(cfg)
    return out


def _run_step(preset: Preset, root: str, step: tuple, threads: int) -> None:
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
        from ..attacks.priors import train_prior

        train_prior(step[1], cache_root=paths.cache / "priors", device=preset.device, progress=False)
    else:
        attack_evaluate(preset, paths, step[1], step[2], step[3], False)


def study_phases(preset: Preset, paths: StudyPaths) -> tuple[list[tuple], list[tuple]]:
    """The steps of a study in the order workers take them: (training, attacks).

    Longest first: a shared prior (at its paper's budget the study's longest serial step)
    runs beside the judges, not after them; then the judges, then every target."""
    labels = sorted({d for d, _ in preset.pairs} | {"none"}, key=list(preset.defenses).index)
    phase1 = [("prior", cfg) for cfg in shared_priors(preset, paths)]
    phase1 += [("eval", False)] + ([("eval", True)] if preset.robust else [])
    phase1 += [("target", label, seed) for seed in preset.seeds for label in labels if runs_of(preset, label, seed)]
    phase2 = [("attack", d, a, s) for s in preset.seeds for d, a in preset.pairs if runs_of(preset, d, s)]
    return phase1, phase2


def run_grid(preset: Preset, paths: StudyPaths, progress: bool, scheduler: str | None = None) -> StudyTables:
    """Every step of the grid (cached steps are reused); returns the study's tables. With more
    than one worker, or a ``scheduler`` address, the steps run as dask tasks first
    (:mod:`re_analysis.study.scheduler`); the pass below then only reads them."""
    if preset.workers > 1 or scheduler:
        from .scheduler import run_on_cluster

        run_on_cluster(preset, paths, progress, scheduler)
    train_eval_model(preset, paths, progress)
    if preset.robust:
        train_eval_model(preset, paths, progress, robust=True)
    labels_needed = sorted({d for d, _ in preset.pairs} | {"none"}, key=list(preset.defenses).index)
    natural = []
    steps = [(d, a, s) for s in preset.seeds for d, a in preset.pairs if runs_of(preset, d, s)]
    targets = [(label, seed) for seed in preset.seeds for label in labels_needed if runs_of(preset, label, seed)]
    bar = tqdm(total=len(targets) + len(steps), desc=f"study {preset.name}", disable=not progress)
    trained = {}
    for label, seed in targets:
        res = train_target(preset, paths, label, seed, progress=False)
        trained[label, seed] = res.metrics
        natural.append(with_keys(pd.read_csv(res.run_dir / TEST_PREDICTIONS), dataset=preset.dataset, defense=label,
                              seed=seed))
        bar.update()
    records = []
    for label, attack, seed in steps:
        m = attack_evaluate(preset, paths, label, attack, seed, progress=False)
        records.append((label, attack, seed, trained[label, seed], m))
        bar.update()
    bar.close()
    return study_tables(preset, paths, records, natural)


def study_tables(preset, paths: StudyPaths, records: list[tuple], natural: list[pd.DataFrame]) -> StudyTables:
    """The study's tables from its finished steps: ``records`` holds (label, attack, seed,
    the target's metrics, :func:`attack_evaluate`'s record) per attack run; ``natural`` the
    targets' per-test-image tables."""
    dataset, columns = preset.dataset, result_columns()
    rows, judged, gaps, seps, chances = [], [], [], [], []
    for label, attack, seed, t, m in records:
        spec = preset.defenses[label]
        rows.append({"dataset": dataset, "defense": label, "defense_name": spec["defense"],
                     "defense_params": yaml.safe_dump(spec["params"], default_flow_style=True).strip() if spec["params"] else "",
                     "attack": attack, "seed": seed, "natural_accuracy": t["natural_accuracy"],
                     "epsilon": t.get("epsilon"), "delta": t.get("delta"),
                     "erased_foreground_share": t.get("erased_foreground_share"),
                     "foreground_erased_share": t.get("foreground_erased_share"),
                     **{k: m.get(k) for k in columns if k in m}})
        out = paths.root / m["attack_dir"]
        keys = {"dataset": dataset, "defense": label, "attack": attack, "seed": seed}
        judged.append(with_keys(pd.read_csv(out / "judgements.csv").drop(columns=["seed"], errors="ignore"), **keys))
        gaps.append(with_keys(pd.read_csv(out / "gap_samples.csv"), **keys))
        chances.append(with_keys(pd.read_csv(out / "chance_judgements.csv").drop(columns=["seed"], errors="ignore"), **keys))
        if (out / "separation_samples.csv").is_file() and not any(
                (x["defense"].iloc[0], x["seed"].iloc[0]) == (label, seed) for x in seps):
            seps.append(with_keys(pd.read_csv(out / "separation_samples.csv"), dataset=dataset, defense=label, seed=seed))
    cat = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()  # noqa: E731
    return StudyTables(pd.DataFrame(rows, columns=columns), cat(judged), cat(natural), cat(gaps), cat(seps),
                       cat(chances))
