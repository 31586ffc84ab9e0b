"""The units of a study: one (arm, seed) each — its target, every attack of the grid on it,
their judgements, gap and galleries — computed anywhere, in any order, and resumable.

A study too long for one machine or one session is computed unit by unit (``re-analysis
study --preset decisive --units 2/5`` on each of five machines or job-array tasks, into one
shared folder, or into separate folders later merged by publishing each): every step stays
content-addressed and locked (:mod:`re_analysis.artifacts`), so two processes never do the
same work and a killed one loses at most the step in flight. The steps every unit shares
(the judges and the target-independent priors) are computed by whichever unit needs them
first.

A finished unit leaves a record, ``units/<arm>-s<seed>.json``: the code commit it ran
(and whether the checkout had uncommitted changes), the hash of the preset's design, the
machine, and each step's seconds as its own files recorded them. The record is written
once, when the unit's last step finishes; a unit is never recomputed to change its result.

Example:
    >>> from re_analysis.study import load_preset
    >>> from re_analysis.study.units import design_units, select_units
    >>> p = load_preset("smoke")
    >>> [u.name for u in design_units(p)]
    ['none-s0', 'random-erasing-s0']
    >>> [u.name for u in select_units(p, "2/2")]
    ['random-erasing-s0']
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_json, config_hash, read_json
from ..errors import ReAnalysisError

__all__ = ["Unit", "UNITS_DIR", "design_units", "select_units", "design_hash", "unit_design_hash", "accepted_designs",
           "extended_design", "run_units", "unit_record",
           "finished_units", "missing_units", "code_version", "machine_info"]

UNITS_DIR = "units"
# What a preset may change without changing its design: how and where it runs, and its prose.
EXECUTION_KEYS = ("workers", "device", "description")


@dataclass(frozen=True, order=True)
class Unit:
    """One arm on one seed: the target of defense ``label`` trained on ``seed`` and every
    attack of the grid on it."""

    seed: int
    label: str

    @property
    def name(self) -> str:
        return f"{self.label}-s{self.seed}"


def design_units(preset) -> list[Unit]:
    """Every unit of the preset's design, seed by seed (so that finished seeds are complete
    pairs early), arms in the preset's order."""
    from .preset import runs_of

    labels = [d for d in preset.defenses if d == "none" or any(x == d for x, _ in preset.pairs)]
    return [Unit(seed, label) for seed in preset.seeds for label in labels if runs_of(preset, label, seed)]


def select_units(preset, spec: str | None) -> list[Unit]:
    """The units ``spec`` names: ``K/N`` (every N-th unit from the K-th, 1-based: N machines or
    job-array tasks share the design evenly), or a comma-separated list of unit names
    (``none-s0,random-erasing-s3``). None: every unit."""
    units = design_units(preset)
    if spec is None:
        return units
    spec = str(spec).strip()
    if "/" in spec and spec.replace("/", "").isdigit():
        k, n = (int(x) for x in spec.split("/"))
        if not 1 <= k <= n:
            raise ReAnalysisError(f"--units {spec}: K/N needs 1 <= K <= N (this task's number K of N tasks)")
        return units[k - 1::n]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    known = {u.name: u for u in units}
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise ReAnalysisError(f"--units {spec}: {', '.join(unknown) or 'nothing'} is not a unit of preset "
                              f"{preset.name!r}; give K/N or names such as {', '.join(list(known)[:3])}")
    return [known[s] for s in names]


def design_hash(preset) -> str:
    """The hash of what the preset decides and computes: every setting but how and where it
    runs, leaving out settings at their default (a later release that adds a setting with a
    default keeps the hash of the designs registered before it)."""
    import dataclasses

    defaults = {}
    for f in dataclasses.fields(preset):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    d = preset.to_dict()
    return config_hash({k: v for k, v in d.items()
                        if k not in EXECUTION_KEYS and not (k in defaults and v == defaults[k])})


def extended_design(preset):
    """The registered design ``preset`` extends (``extends:``; it only adds arms, checked when the
    preset loads), or None."""
    if preset.extends is None:
        return None
    from .preset import load_preset

    return load_preset(preset.extends)


def unit_design_hash(preset, label: str) -> str:
    """The design hash a unit of arm ``label`` records: that of the design that first defines
    the arm along the ``extends`` chain. A unit of a stage-1 arm computed under its stage-2
    extension is the stage-1 unit, and stage 1's own bundle accepts it."""
    base = extended_design(preset)
    if base is not None and label in base.defenses:
        return unit_design_hash(base, label)
    return design_hash(preset)


def accepted_designs(preset) -> dict[str, set[str] | None]:
    """Design hash -> the arms whose unit records may carry it under ``preset`` (None: any arm):
    its own, and for each design it extends, that design's arms."""
    out: dict[str, set[str] | None] = {design_hash(preset): None}
    base = extended_design(preset)
    while base is not None:
        out.setdefault(design_hash(base), set(base.defenses))
        base = extended_design(base)
    return out


def code_version() -> dict[str, Any]:
    """The git commit of the code that runs (and whether its checkout had uncommitted
    changes), or the package version where it is not a git checkout."""
    from .. import __version__

    root = Path(__file__).resolve().parents[2]
    out: dict[str, Any] = {"version": __version__}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                     "--", "re_analysis"], capture_output=True, text=True, timeout=10)
            out.update(commit=commit.stdout.strip(), dirty=bool(status.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def machine_info() -> dict[str, Any]:
    """What ran a unit: the CPU (or GPU), cores, threads and the numerics that decide float rounding."""
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _seconds(path: Path, key: str) -> float | None:
    try:
        value = read_json(path).get(key)
    except (OSError, ValueError, ReAnalysisError):
        return None
    return None if value is None else round(float(value), 1)


def unit_record(preset, paths, unit: Unit, attacks: dict[str, str], target_dir: Path) -> dict[str, Any]:
    """The record of a finished unit (its step times read from the files its steps wrote)."""
    root = paths.root
    steps = {"target": _seconds(target_dir / "metrics.json", "train_seconds_this_call")}
    for attack, rel in attacks.items():
        run = root / rel
        steps[f"attack {attack}"] = _seconds(run / "attack.json", "seconds")
        steps[f"evaluation {attack}"] = _seconds(run / "metrics.json", "evaluate_seconds")
        steps[f"gap {attack}"] = _seconds(run / "gap.json", "seconds")
    return {"unit": unit.name, "label": unit.label, "seed": unit.seed, "preset": preset.name,
            "design_hash": unit_design_hash(preset, unit.label), "rules": preset.rules, "code": code_version(),
            "machine": machine_info(),
            "steps_seconds": steps, "seconds": round(sum(v for v in steps.values() if v), 1),
            "target_dir": str(target_dir.relative_to(root)), "attack_dirs": attacks,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def finished_units(root: str | Path, preset) -> dict[str, dict]:
    """The records of the finished units of ``preset``'s design under ``root``, by unit name;
    a record of another design is an error naming it (one folder, one design and the designs it
    extends: a stage-2 extension's folder holds stage 1's units with stage 1's hash)."""
    folder = Path(root) / UNITS_DIR
    out = {}
    accepted = accepted_designs(preset)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = read_json(path)
        arms = accepted.get(record.get("design_hash"), set())
        if arms is not None and record.get("label") not in arms:
            raise ReAnalysisError(f"{path} records a unit of another design (hash {record.get('design_hash')}, this "
                                  f"preset's {design_hash(preset)}); give this preset its own folder, or publish "
                                  "with the design that extends this one")
        out[record["unit"]] = record
    return out


def missing_units(root: str | Path, preset) -> list[Unit]:
    """The units of the design without a record under ``root``."""
    done = finished_units(root, preset)
    return [u for u in design_units(preset) if u.name not in done]


def run_units(preset, out_dir: str | Path, units: list[Unit] | None = None, progress: bool = True) -> list[dict]:
    """Compute ``units`` (default: the whole design) of ``preset`` in ``out_dir``, one after
    another in this process; units already recorded are skipped. Returns their records."""
    from tqdm import tqdm

    from ..artifacts import claim_run_dir
    from . import StudyPaths, attack_evaluate, shared_priors, study_log, train_eval_model, train_target

    paths = StudyPaths(Path(out_dir))
    units = design_units(preset) if units is None else units
    claim_run_dir(paths.root, {}, kind="study")  # the folder is a study's (released at once: units lock their own runs)
    done = finished_units(paths.root, preset)
    todo = [u for u in units if u.name not in done]
    records = [done[u.name] for u in units if u.name in done]
    if not todo:
        return records
    with study_log(paths.root):
        from ..attacks.priors import train_prior

        for cfg in shared_priors(preset, paths):
            train_prior(cfg, cache_root=paths.cache / "priors", device=preset.device, progress=False)
        train_eval_model(preset, paths, progress=False)
        if preset.robust:
            train_eval_model(preset, paths, progress=False, robust=True)
        for unit in tqdm(todo, desc=f"{preset.name}: units", disable=not progress):
            target = train_target(preset, paths, unit.label, unit.seed, progress=False)
            attacks = {}
            for label, attack in preset.pairs:
                if label == unit.label:
                    attacks[attack] = attack_evaluate(preset, paths, label, attack, unit.seed, progress=False)["attack_dir"]
            record = unit_record(preset, paths, unit, attacks, target.run_dir)
            atomic_write_json(paths.root / UNITS_DIR / f"{unit.name}.json", record)
            records.append(record)
    return records
