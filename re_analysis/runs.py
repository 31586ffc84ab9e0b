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

__all__ = ["target_record", "target_splits"]

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
