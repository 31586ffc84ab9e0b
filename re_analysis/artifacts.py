"""Run directories, atomic writes, checksummed manifests, run locks and cache keys.

Nothing lost, nothing trusted on sight:

- **Atomic writes.** Every file is written to a temporary sibling and renamed into place,
  so a killed process leaves either the old file or the new one, never half of one.
- **Manifests.** A *run directory* is the nearest ancestor of a file holding the run record
  ``config.json`` (written by :func:`claim_run_dir`). Every write through this module under
  a run directory records ``{relative path: {sha256, size}}`` in that run's
  ``manifest.json``, and every read through it (:func:`load_tensors`, :func:`load_state`,
  :func:`tensors_metadata`, :func:`read_json`) checks the file against that record. A missing,
  truncated, altered or unreadable file raises :class:`DamagedArtifactError`, whose one-line
  message names the file, the damage and the command that rebuilds it. Files of runs made
  before manifests are still checked for structure (a truncated safetensors header is
  reported the same way).
- **Run locks.** :func:`claim_run_dir` takes an OS-level lock (``filelock``) on the run
  directory, held until the enclosing :class:`claim_scope` ends: a second process on the same
  run waits, then finds the first one's result and reuses it. The lock dies with its process,
  so a crash never leaves a stale lock. Within one process the lock is reentrant.
- **Verification.** :func:`verify_runs` checks every manifest and checksum under a folder
  (``re-analysis verify DIR``).

Example:
    >>> from re_analysis.artifacts import atomic_write_json, claim_run_dir, claim_scope, read_json
    >>> with claim_scope():  # doctest: +SKIP
    ...     run = claim_run_dir("runs/demo", {"epochs": 2}, kind="train")
    ...     atomic_write_json(run / "metrics.json", {"natural_accuracy": 0.98})
    >>> read_json("runs/demo/metrics.json")  # verified against runs/demo/manifest.json  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import DamagedArtifactError, ReAnalysisError, RunBusyError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_tensors",
    "atomic_output",
    "remove_artifact",
    "load_tensors",
    "tensors_metadata",
    "save_state",
    "load_state",
    "read_json",
    "artifact_exists",
    "verify_artifact",
    "find_run_dir",
    "config_hash",
    "claim_run_dir",
    "claim_scope",
    "lock_run_dir",
    "set_aside",
    "verify_run",
    "verify_runs",
    "ensure_intact",
    "ArtifactProblem",
    "VerifyReport",
    "DamagedArtifactError",
    "RunBusyError",
    "environment_versions",
]

log = logging.getLogger("re_analysis")

RUN_RECORD = "config.json"
MANIFEST = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"
LOCK_TIMEOUT_ENV = "RE_ANALYSIS_LOCK_TIMEOUT"
SET_ASIDE_TAG = ".damaged-"
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) and put back
os.umask(_UMASK)


# --------------------------------------------------------------------------- run directories

def find_run_dir(path: str | os.PathLike) -> Path | None:
    """The run directory ``path`` belongs to: its nearest ancestor holding a run record.

    Example:
        >>> find_run_dir("runs/re-0/model.safetensors")  # doctest: +SKIP
        PosixPath('/abs/runs/re-0')
    """
    path = _abs(path)
    if path.name == RUN_RECORD:
        return path.parent
    for folder in path.parents:
        if _is_run_dir(folder):
            return folder
    return None


def _abs(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


def _is_run_dir(folder: Path) -> bool:
    # A run record, or our manifest (which still vouches for the files when the record itself
    # is damaged). Another tool's config.json or manifest.json up the tree is neither.
    for name, keys in ((RUN_RECORD, ("kind", "config_hash")), (MANIFEST, ("format", "artifacts"))):
        if (folder / name).is_file():
            try:
                data = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and all(k in data for k in keys):
                return True
    return False


def _run_kind(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def repair_hint(run_dir: Path | None) -> str:
    """The command that rebuilds the files of ``run_dir`` (one sentence)."""
    if run_dir is None:
        return "delete it and re-run the command that wrote it"
    for folder in (run_dir, *run_dir.parents):
        if _run_kind(folder) == "study":
            return (f"re-run the study (`re-analysis study --out {folder}` with the same preset): it sets damaged "
                    "runs aside and recomputes them")
    command = {"train": "re-analysis train", "attack": "re-analysis attack"}.get(_run_kind(run_dir) or "")
    if command:
        return (f"move {run_dir} aside and re-run `{command} --out {run_dir}` with the options recorded in its "
                f"{RUN_RECORD}")
    if _run_kind(run_dir) == "prior":
        return f"move {run_dir} aside: the next attack that needs this prior trains it again"
    return f"move {run_dir} aside and re-run the command that wrote it"


def damaged(path: str | os.PathLike, problem: str) -> DamagedArtifactError:
    """The error for a damaged ``path``, with the repair command of its run."""
    run_dir = find_run_dir(path)
    return DamagedArtifactError(path, run_dir, problem, repair_hint(run_dir))


# --------------------------------------------------------------------------- checksums and manifests

_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime, ctime, inode) -> sha256: a file is hashed once per process


def file_state(path: Path) -> dict[str, Any] | None:
    """``{"sha256", "size"}`` of a file, ``None`` when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = _sha256(path)
    return {"sha256": _DIGESTS[key], "size": st.st_size}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The artifacts ``run_dir/manifest.json`` records (``None`` for a run made before manifests)."""
    path = run_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise DamagedArtifactError(path, run_dir, "unreadable: not valid JSON", repair_hint(run_dir)) from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict):
        raise DamagedArtifactError(path, run_dir, "unreadable: not a manifest", repair_hint(run_dir))
    return data["artifacts"]


@contextlib.contextmanager
def _editing_manifest(run_dir: Path) -> Iterator[dict[str, Any]]:
    # A short lock of its own: under torchrun every rank records its parts while rank 0
    # holds the run lock for the whole run.
    with FileLock(str(run_dir / MANIFEST_LOCK), is_singleton=True):
        artifacts = read_manifest(run_dir) or {}
        yield artifacts
        blob = json.dumps({"format": 1, "artifacts": artifacts}, indent=1, sort_keys=True) + "\n"
        _write_file(run_dir / MANIFEST, blob.encode("utf-8"))


def _key(path: Path, run_dir: Path) -> str:
    return path.relative_to(run_dir).as_posix()


def _accepted_states(entry: Mapping[str, Any]) -> list:
    # A settled entry is one state; an interrupted write or removal leaves a pending entry
    # listing the states the file may be in (new, old, or None for absent): either is whole.
    return list(entry["pending"]) if "pending" in entry else [entry]


def _current_state(entry: Mapping[str, Any] | None, path: Path) -> dict | None:
    """The state to fall back to if the write now starting is interrupted."""
    actual = file_state(path)
    if entry is None:
        return actual
    if "pending" not in entry:
        return entry
    return actual if actual in _accepted_states(entry) else None


def entry_problem(path: Path, entry: Mapping[str, Any]) -> str | None:
    """What is wrong with ``path`` against its manifest ``entry`` (``None``: intact)."""
    states = _accepted_states(entry)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None if None in states else "missing"
    recorded = [s for s in states if s is not None]
    if not recorded:
        return "present although its removal was recorded"
    if not any(s["size"] == size for s in recorded):
        return f"size differs: {size} bytes, {recorded[0]['size']} recorded"
    if file_state(path) not in recorded:
        return "checksum differs from the recorded sha256"
    return None


def _manifest_entry(path: Path) -> tuple[Path | None, Mapping[str, Any] | None]:
    run_dir = find_run_dir(path)
    if run_dir is None:
        return None, None
    manifest = read_manifest(run_dir)
    return run_dir, (manifest or {}).get(_key(path, run_dir))


def verify_artifact(path: str | os.PathLike) -> bool:
    """Check ``path`` against its run's manifest.

    Returns ``True`` when the file is recorded and intact, ``False`` when no manifest
    records it (outside a run, or a run made before manifests); raises
    :class:`DamagedArtifactError` when it is recorded but missing, truncated or altered.
    """
    path = _abs(path)
    run_dir, entry = _manifest_entry(path)
    if entry is None:
        return False
    problem = entry_problem(path, entry)
    if problem:
        raise DamagedArtifactError(path, run_dir, problem, repair_hint(run_dir))
    return True


def artifact_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is there; raises :class:`DamagedArtifactError` when its run records it but it is gone."""
    if Path(path).is_file():
        return True
    path = _abs(path)
    run_dir, entry = _manifest_entry(path)
    if entry is not None and None not in _accepted_states(entry):
        raise DamagedArtifactError(path, run_dir, "missing", repair_hint(run_dir))
    return False


# --------------------------------------------------------------------------- atomic writes

def _fsync(path: str | os.PathLike) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write_file(path: Path, data: bytes) -> None:
    """Temp file + fsync + rename, recording nothing (the manifest itself, lock side files)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _install(tmp: Path, path: Path) -> None:
    """Rename a finished temp file onto ``path`` and record it in its run's manifest.

    Two manifest updates bracket the rename: first a pending entry accepting the new
    content or the old one, then the settled entry. A process killed anywhere in between
    leaves a file the manifest accepts, so an interruption never looks like damage.
    """
    run_dir = find_run_dir(path)
    if run_dir is None:
        os.replace(tmp, path)
        return
    key, new = _key(path, run_dir), {"sha256": _sha256(tmp), "size": tmp.stat().st_size}
    with _editing_manifest(run_dir) as artifacts:
        artifacts[key] = {"pending": [new, _current_state(artifacts.get(key), path)]}
    os.replace(tmp, path)
    _DIGESTS[(str(path),) + _stat_key(path)] = new["sha256"]
    with _editing_manifest(run_dir) as artifacts:
        artifacts[key] = new


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name to write ``path`` through; renamed into place and recorded after the block.

    For writers that want a file name (matplotlib's ``savefig``, torchvision's ``save_image``).
    The temporary name keeps the suffix, so format detection by extension works.

    Example:
        >>> with atomic_output("runs/a/grid.png") as tmp:  # doctest: +SKIP
        ...     save_image(images, tmp)
    """
    path = _abs(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared like any file
    try:
        yield Path(tmp)
        _fsync(tmp)
        _install(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file + rename (atomic on POSIX), recorded in its run's manifest."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


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


def atomic_save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str] | None = None) -> Path:
    """Save tensors as safetensors (no pickle) through a temp file + rename, recorded in its run's manifest."""
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)
    return Path(path)


def remove_artifact(path: str | os.PathLike) -> None:
    """Delete a file the suite wrote (a finished run's checkpoint) and drop it from its run's manifest."""
    path = _abs(path)
    run_dir = find_run_dir(path)
    if run_dir is None:
        path.unlink(missing_ok=True)
        return
    key = _key(path, run_dir)
    with _editing_manifest(run_dir) as artifacts:
        artifacts[key] = {"pending": [None, _current_state(artifacts.get(key), path)]}
    path.unlink(missing_ok=True)
    with _editing_manifest(run_dir) as artifacts:
        artifacts.pop(key, None)


# --------------------------------------------------------------------------- verified reads

def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, checked against its run's manifest; damage -> :class:`DamagedArtifactError`."""
    path = Path(path)
    if artifact_exists(path):  # a recorded file that is gone raises; an unrecorded one raises on open
        verify_artifact(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged(path, f"unreadable: not valid JSON ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _checked_safetensors(path: Path) -> Path:
    if not artifact_exists(path):
        raise ReAnalysisError(f"no weights file at {path}; train the model first or pass the run directory that holds it")
    verify_artifact(path)
    return path


def load_tensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (never unpickles), checked against its run's manifest.

    A truncated or altered file raises :class:`DamagedArtifactError`, also in runs made
    before manifests (the safetensors header check).
    """
    path = _checked_safetensors(Path(path))
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as exc:
        raise damaged(path, f"unreadable: {_first_line(exc)}") from None


def tensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, checked like :func:`load_tensors`."""
    path = _checked_safetensors(Path(path))
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise damaged(path, f"unreadable: {_first_line(exc)}") from None


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
    blob = json.loads(tensors_metadata(path)["state"])
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


# --------------------------------------------------------------------------- cache keys and versions

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


# --------------------------------------------------------------------------- run locks

_SCOPES = threading.local()  # per thread: a stack of lists of the locks each claim_scope holds


class claim_scope(contextlib.ContextDecorator):
    """Run directories claimed (or locked) inside this block or call stay locked until it ends.

    Use it as a decorator on a function that claims a run and computes it, or as a
    context manager. Scopes nest; a lock taken twice in one process is reentrant.

    Example:
        >>> @claim_scope()
        ... def compute(out):
        ...     claim_run_dir(out, {"steps": 10}, kind="train")  # held until compute returns
        ...     ...
    """

    def __enter__(self):
        _scope_stack().append([])
        return self

    def __exit__(self, *exc):
        for lock, run_dir in reversed(_scope_stack().pop()):
            _release(lock, run_dir)
        return False


def _scope_stack() -> list:
    if not hasattr(_SCOPES, "stack"):
        _SCOPES.stack = []
    return _SCOPES.stack


def _lock_paths(run_dir: Path) -> tuple[Path, Path]:
    # Beside the run directory, not in it: the lock stays put when a damaged run is set aside.
    return run_dir.parent / f".{run_dir.name}.lock", run_dir.parent / f".{run_dir.name}.lock.holder"


def _lock_timeout() -> float:
    text = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return float(text) if text.strip() else -1.0
    except ValueError:
        raise ReAnalysisError(f"{LOCK_TIMEOUT_ENV}={text!r} is not a number of seconds; unset it to wait "
                              "for a busy run, or set 0 to fail at once") from None


def _holder(run_dir: Path) -> str:
    try:
        h = json.loads(_lock_paths(run_dir)[1].read_text(encoding="utf-8"))
        return f"process {h['pid']} on {h['host']} (since {h['since']}: {h['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def lock_run_dir(run_dir: str | os.PathLike, timeout: float | None = None) -> Path:
    """Take the OS-level lock of ``run_dir`` until the enclosing :class:`claim_scope` ends.

    Waits for another process holding it (``timeout`` seconds, default the
    ``RE_ANALYSIS_LOCK_TIMEOUT`` environment variable, else for ever; 0 fails at once with
    :class:`RunBusyError` naming the holder's pid and host). Outside any scope the lock is
    released again at once (only the moment of the call is serialised).
    """
    run_dir = _abs(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path, holder_path = _lock_paths(run_dir)
    lock = FileLock(str(lock_path), is_singleton=True)
    timeout = _lock_timeout() if timeout is None else float(timeout)
    if lock.is_locked:
        lock.acquire()  # this process holds it already: reentrant
    else:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = _holder(run_dir)
            if timeout == 0:
                raise RunBusyError(f"{run_dir} is being computed by {holder}; wait for it to finish (it will "
                                   "be reused) or pass another output directory") from None
            log.warning("%s is being computed by %s; waiting for it to finish", run_dir, holder)
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise RunBusyError(f"{run_dir} is still being computed by {_holder(run_dir)} after {timeout:g} s; "
                                   f"wait longer (unset {LOCK_TIMEOUT_ENV}) or pass another output "
                                   "directory") from None
        _write_file(holder_path, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:200]}).encode("utf-8"))
    stack = _scope_stack()
    if stack:
        stack[-1].append((lock, run_dir))
    else:
        _release(lock, run_dir)
    return run_dir


def _release(lock: FileLock, run_dir: Path) -> None:
    if lock.lock_counter == 1:
        _lock_paths(run_dir)[1].unlink(missing_ok=True)
    lock.release()


def claim_run_dir(run_dir: str | os.PathLike, config: Mapping[str, Any], kind: str) -> Path:
    """Lock ``run_dir`` and create it for ``config``, or confirm it already belongs to it.

    Writes ``config.json`` (with ``kind`` and the config hash) the first time. A directory
    that holds a different config raises instead of being overwritten. The lock is held
    until the enclosing :class:`claim_scope` ends, so a second process claiming the same
    run waits for the first and then finds its finished result. Temporary files left by a
    killed writer are removed.
    """
    if not _scope_stack():
        with claim_scope():
            return claim_run_dir(run_dir, config, kind)
    run_dir = Path(run_dir)
    lock_run_dir(run_dir)
    record = {"kind": kind, "config": dict(config), "config_hash": config_hash(config)}
    cfg_path = run_dir / RUN_RECORD
    if cfg_path.is_file():
        existing = read_json(cfg_path)
        if existing.get("kind") != kind or existing.get("config_hash") != record["config_hash"]:
            raise ReAnalysisError(
                f"{run_dir} already holds a {existing.get('kind', 'different')} run with another config "
                f"(hash {existing.get('config_hash')}, this one {record['config_hash']}); "
                "pass a new --out directory instead of overwriting it")
        _sweep_temporaries(run_dir)
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, record)
    return run_dir


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name


def _sweep_temporaries(run_dir: Path) -> None:
    """Remove temp files a killed writer left at the top of ``run_dir`` (we hold its lock)."""
    with FileLock(str(run_dir / MANIFEST_LOCK), is_singleton=True):
        for p in run_dir.iterdir():
            if p.is_file() and _is_temporary(p.name):
                p.unlink(missing_ok=True)


def set_aside(path: str | os.PathLike) -> Path:
    """Move a damaged run directory (or file) out of the way, kept for inspection.

    The new name is ``NAME.damaged-<time>``; a file is also dropped from its run's manifest,
    so the step that writes it runs again. Returns the new path.

    Example:
        >>> set_aside("runs/study/targets/none-s0-1234abcd")  # doctest: +SKIP
        PosixPath('runs/study/targets/none-s0-1234abcd.damaged-20250101-120000')
    """
    path = _abs(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.name}{SET_ASIDE_TAG}{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}{SET_ASIDE_TAG}{stamp}-{n}")
    if path.is_dir():
        with claim_scope():
            lock_run_dir(path)  # nobody is writing into it while it moves
            os.replace(path, dest)
        return dest
    run_dir = find_run_dir(path)
    os.replace(path, dest)
    if run_dir is not None and (run_dir / MANIFEST).is_file():
        with contextlib.suppress(DamagedArtifactError), _editing_manifest(run_dir) as artifacts:
            artifacts.pop(_key(path, run_dir), None)
    return dest


# --------------------------------------------------------------------------- verification

@dataclass(frozen=True)
class ArtifactProblem:
    """One damaged file: where, in which run, what is wrong and how to rebuild it."""

    path: Path
    run_dir: Path | None
    problem: str

    @property
    def recorded(self) -> bool:
        """False for a file the manifest does not vouch for (present but not recorded)."""
        return not self.problem.startswith("not recorded")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class VerifyReport:
    """What :func:`verify_runs` found: problems (damage) and notes (what could not be checked)."""

    root: Path
    runs: int = 0
    files: int = 0
    problems: list[ArtifactProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def _is_bookkeeping(name: str) -> bool:
    # the manifest itself, lock side files, appended logs and temporaries of killed writers
    return (name in (MANIFEST, MANIFEST_LOCK) or name.endswith((".lock", ".lock.holder", ".log"))
            or _is_temporary(name))


def structure_problem(path: Path) -> str | None:
    """Damage visible without a manifest: unreadable safetensors, JSON or PNG."""
    try:
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                im.load()
    except Exception as exc:  # any failure to parse is the finding itself
        return f"unreadable: {_first_line(exc)}"
    return None


def verify_run(run_dir: str | os.PathLike, files: list[Path] | None = None) -> list[ArtifactProblem]:
    """Every problem of one run: recorded files missing, truncated or altered; files present
    but not recorded; structure checks where the run has no manifest.

    ``files`` are the files found in the run (default: walked, nested runs excluded).
    """
    run_dir = _abs(run_dir)
    files = _run_files(run_dir) if files is None else files
    try:
        manifest = read_manifest(run_dir)
    except DamagedArtifactError as exc:
        return [ArtifactProblem(exc.path, run_dir, exc.problem)]
    problems = []
    if manifest is None:
        for f in files:
            problem = structure_problem(f)
            if problem:
                problems.append(ArtifactProblem(f, run_dir, problem))
        return problems
    for key, entry in sorted(manifest.items()):
        problem = entry_problem(run_dir / key, entry)
        if problem:
            problems.append(ArtifactProblem(run_dir / key, run_dir, problem))
    for f in files:
        if _key(f, run_dir) not in manifest:
            problems.append(ArtifactProblem(f, run_dir, "not recorded in the manifest (written outside the suite?)"))
    return problems


def _walk(root: Path, report: VerifyReport | None = None) -> dict[Path | None, list[Path]]:
    by_run: dict[Path | None, list[Path]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        for name in sorted(dirnames):
            if SET_ASIDE_TAG in name:
                dirnames.remove(name)
                if report is not None:
                    report.notes.append(f"set aside (damaged, kept for inspection, not checked): {folder / name}")
        dirnames.sort()
        if _is_run_dir(folder):
            by_run.setdefault(folder, [])
        for name in sorted(filenames):
            if _is_bookkeeping(name):
                continue
            if SET_ASIDE_TAG in name:
                if report is not None:
                    report.notes.append(f"set aside (damaged, kept for inspection, not checked): {folder / name}")
                continue
            by_run[find_run_dir(folder / name)].append(folder / name)
    return by_run


def _run_files(run_dir: Path) -> list[Path]:
    return _walk(run_dir).get(run_dir, [])


def verify_runs(root: str | os.PathLike) -> VerifyReport:
    """Check every run under ``root`` (a study, a run, or a folder of runs).

    Every manifest entry is checked for presence, size and sha256; files present but not
    recorded are reported too; runs made before manifests get structure checks and a note.

    Example:
        >>> report = verify_runs("runs/quick")  # doctest: +SKIP
        >>> report.clean, [str(p) for p in report.problems]  # doctest: +SKIP
        (True, [])
    """
    root = _abs(root)
    if not root.is_dir():
        raise ReAnalysisError(f"{root} is not a directory; pass a study or run directory (e.g. runs/quick)")
    report = VerifyReport(root)
    for run_dir, files in _walk(root, report).items():
        report.files += len(files)
        if run_dir is None:
            for f in files:
                problem = structure_problem(f)
                if problem:
                    report.problems.append(ArtifactProblem(f, None, problem))
            if files:
                report.notes.append(f"{len(files)} file(s) outside any run directory: structure checked only")
            continue
        report.runs += 1
        problems = verify_run(run_dir, files)
        if run_dir == root or root in run_dir.parents:
            report.problems += problems
        else:  # root lies inside this run: only what is under root
            report.problems += [p for p in problems if root in p.path.parents]
        if not (run_dir / MANIFEST).is_file():
            report.notes.append(f"{run_dir} has no manifest (made before manifests): structure checked only")
    return report


def ensure_intact(run_dir: str | os.PathLike) -> None:
    """Raise :class:`DamagedArtifactError` for the first recorded file of ``run_dir`` that is damaged.

    A cached step checks its run with this before reusing it. Files the manifest does not
    record are left to the loaders' own checks.
    """
    run_dir = _abs(run_dir)
    if not run_dir.is_dir():
        return
    for p in verify_run(run_dir):
        if p.recorded:
            raise DamagedArtifactError(p.path, run_dir, p.problem, repair_hint(run_dir))
