"""Reading finished run directories: a training run's record and the data splits it used.

The room that owns run directories' contents for every reader (attacks, evaluation, the
feature-space analysis), so none of them reaches into another's room for it.

Example:
    >>> from re_analysis.runs import target_record, target_splits
    >>> rec = target_record("runs/re-0")  # doctest: +SKIP
    >>> splits = target_splits(rec)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .artifacts import artifact_exists, read_json
from .errors import ReAnalysisError

__all__ = ["target_record", "target_splits", "run_record", "study_record", "study_roles"]

WEIGHTS = "model.safetensors"


def target_record(target_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a finished training run (kind, config, config hash)."""
    target_dir = Path(target_dir)
    cfg_path = target_dir / "config.json"
    if not cfg_path.is_file() or not artifact_exists(target_dir / WEIGHTS):
        raise ReAnalysisError(f"{target_dir} is not a finished training run (config.json and {WEIGHTS}); "
                              "train a target first with `re-analysis train --out DIR`")
    return read_json(cfg_path)


def target_splits(target_rec: dict):
    """The dataset splits a target was trained on (same dataset, root, size, seed and options)."""
    from .data import load_dataset

    t = target_rec["config"]
    return load_dataset(t["dataset"], root=t.get("root"), seed=t["seed"], image_size=t.get("image_size"),
                        **t.get("dataset_params", {}))


def run_record(run_dir: str | Path, name: str, default: Any = None) -> Any:
    """The JSON record ``name`` (``metrics.json``, ``attack.json``, ``gap.json``, ``units/x.json``,
    ...) of a run or study folder, checked against its manifest where it has one
    (:func:`re_analysis.artifacts.read_json`); ``default`` when the folder holds none (a
    ``default`` of None: absence is an error naming the file)."""
    path = Path(run_dir) / name
    if not path.is_file():
        if default is None:
            raise ReAnalysisError(f"{path} is missing; the run that writes it has not finished")
        return default
    return read_json(path)


def study_record(run_dir: str | Path) -> dict[str, Any]:
    """``study.json`` of a study folder (the resolved preset its last study call ran), or {}."""
    return run_record(run_dir, "study.json", default={})


def study_roles(run_dir: str | Path, results):
    """The roles the study's defense labels play in the claims: its preset's ``claims:`` when it
    declared them, else each defense's registered role (:func:`re_analysis.verdicts.roles_for`)."""
    from .verdicts import roles_for

    names = dict(zip(results["defense"], results["defense_name"])) if "defense_name" in results else {}
    return roles_for(list(dict.fromkeys(results["defense"])), names, study_record(run_dir).get("claims") or {})
