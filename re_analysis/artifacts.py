"""Run directories, atomic writes, manifests and content-addressed cache keys.

Nothing lost: every file is written to a temporary sibling and renamed into place, so a
killed process leaves either the old file or the new one, never half of one. A run
directory records the config that made it (``config.json``); reusing the directory with a
different config is refused instead of overwriting a finished artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from .errors import ReAnalysisError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_tensors",
    "load_tensors",
    "save_state",
    "load_state",
    "read_json",
    "config_hash",
    "claim_run_dir",
    "environment_versions",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file + rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def atomic_save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str] | None = None) -> Path:
    """Save tensors as safetensors (no pickle) through a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                  metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        raise ReAnalysisError(f"no weights file at {path}; train the model first or pass the run directory that holds it")
    return load_file(str(path), device=device)


def save_state(path: str | os.PathLike, modules: Mapping[str, Any], optimizers: Mapping[str, Any],
               meta: Mapping[str, Any]) -> Path:
    """Checkpoint modules (or plain tensors) and optimisers as ONE safetensors file.

    Tensors go into the file, everything else (step counters, param groups, ``meta``) into
    its JSON metadata, so a checkpoint loads without unpickling and is replaced atomically.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        if torch.is_tensor(mod):
            tensors[f"tensor/{name}"] = mod
        else:
            tensors.update({f"module/{name}/{k}": v for k, v in mod.state_dict().items()})
    optim_meta = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, state in sd["state"].items():
            for k, v in state.items():
                if torch.is_tensor(v):
                    tensors[f"optim/{name}/{idx}/{k}"] = v
                else:
                    scalars.setdefault(str(idx), {})[k] = v
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    blob = {"meta": dict(meta), "optimizers": optim_meta}
    return atomic_save_tensors(path, tensors, {"state": json.dumps(blob, default=_json_default)})


def load_state(path: str | os.PathLike, modules: Mapping[str, Any], optimizers: Mapping[str, Any]) -> dict:
    """Restore what :func:`save_state` wrote; returns ``meta`` and ``tensors`` (plain tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        blob = json.loads(fh.metadata()["state"])
    tensors = load_tensors(path)
    for name, mod in modules.items():
        prefix = f"module/{name}/"
        mod.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in optimizers.items():
        prefix = f"optim/{name}/"
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                idx, key = k[len(prefix):].split("/", 1)
                state.setdefault(int(idx), {})[key] = v
        for idx, d in blob["optimizers"][name]["scalars"].items():
            state.setdefault(int(idx), {}).update(d)
        opt.load_state_dict({"state": state, "param_groups": blob["optimizers"][name]["param_groups"]})
    plain = {k[len("tensor/"):]: v for k, v in tensors.items() if k.startswith("tensor/")}
    return {"meta": blob["meta"], "tensors": plain}


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """A stable content hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def environment_versions() -> dict[str, str]:
    """Versions recorded in every manifest, so a result can be traced to its software."""
    import numpy
    import torchvision

    from . import __version__

    return {
        "re_analysis": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def claim_run_dir(run_dir: str | os.PathLike, config: Mapping[str, Any], kind: str) -> Path:
    """Create ``run_dir`` for ``config`` or confirm it already belongs to it.

    Writes ``config.json`` (with ``kind`` and the config hash) the first time. A directory
    that holds a different config raises instead of being overwritten.
    """
    run_dir = Path(run_dir)
    record = {"kind": kind, "config": dict(config), "config_hash": config_hash(config)}
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        existing = read_json(cfg_path)
        if existing.get("kind") != kind or existing.get("config_hash") != record["config_hash"]:
            raise ReAnalysisError(
                f"{run_dir} already holds a {existing.get('kind', 'different')} run with another config "
                f"(hash {existing.get('config_hash')}, this one {record['config_hash']}); "
                "pass a new --out directory instead of overwriting it")
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, record)
    return run_dir
