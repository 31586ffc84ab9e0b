"""A study's steps as tasks of dask.distributed, with their dependencies: on this machine (a
``LocalCluster`` of worker processes), on a running cluster (``--scheduler ADDRESS``), or on
Slurm through dask-jobqueue (the book's chapter "Run it on a cluster").

The graph: the shared priors, the open-set judge and every target need nothing; the robust
judge fine-tunes the open-set one; each attack step (attack, judgements, chance samples, gap)
needs its target, the priors and the judges. Results land in the study's content-addressed
folder, which every worker must see (a shared filesystem on a cluster); each step claims its
run directory with an OS-level lock, so two workers never compute the same step, a step whose
worker dies is redone by another (dask reschedules it; the lock died with the process and the
step resumes from its last checkpoint), and a finished step is never redone. Each task runs
with one torch thread per worker core; CUDA workers declare ``resources={"GPU": 1}`` and GPU
steps ask for one.

Example:
    >>> from re_analysis.study import load_preset
    >>> from re_analysis.study.scheduler import study_graph
    >>> [k for k, _, _ in study_graph(load_preset("smoke"), "runs/smoke")][:3]  # doctest: +SKIP
    ['prior-...', 'judge-open', 'judge-robust']
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ReAnalysisError

__all__ = ["connect", "study_graph", "run_on_cluster"]

log = logging.getLogger("re_analysis")


def _gpu(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def connect(workers: int, scheduler: str | None = None, device: str = "auto", timeout: float = 10):
    """A dask ``Client``: to the scheduler at ``scheduler`` (a running cluster), or to a new
    ``LocalCluster`` of ``workers`` processes (one thread each; each declares one GPU when the
    study runs on CUDA). A scheduler that cannot be reached is one clear error."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ReAnalysisError(f"cannot reach the dask scheduler at {scheduler!r} ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else 'no answer'}); start one with "
                                  "`dask scheduler` and its workers with `dask worker ADDRESS`, or drop --scheduler to "
                                  "run on this machine") from None
    import dask

    # A worker whose process died is restarted by its nanny; the cluster forgets it for good when no
    # worker of its name comes back within this time (dask's default 15 s: a loaded machine takes longer
    # to start a Python process, and the nanny was closed mid-restart, the study left with no workers).
    dask.config.set({"distributed.deploy.lost-worker-timeout": "600s"})
    resources = {"GPU": 1} if _gpu(device) else None
    quiet = logging.INFO if os.environ.get("RE_ANALYSIS_DASK_LOGS") else logging.ERROR  # the cluster's own log
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=quiet, resources=resources)
    return Client(cluster)


def study_graph(preset, root: str | Path) -> list[tuple[str, tuple, list[str]]]:
    """The study's steps as (key, step, keys it depends on), in the order they are submitted:
    the longest independent steps first (the shared prior), then the judges and the targets,
    then the attacks."""
    from . import StudyPaths, study_phases

    paths = StudyPaths(Path(root))
    phase1, phase2 = study_phases(preset, paths)
    graph, priors = [], []
    for step in phase1:
        if step[0] == "prior":
            key = f"prior-{len(priors)}"
            priors.append(key)
            graph.append((key, step, []))
        elif step[0] == "eval":
            graph.append(("judge-robust" if step[1] else "judge-open", step, ["judge-open"] if step[1] else []))
        else:
            graph.append((f"target-{step[1]}-s{step[2]}", step, []))
    judges = [k for k, _, _ in graph if k.startswith("judge-")]
    for step in phase2:
        _, label, attack, seed = step
        graph.append((f"attack-{label}-{attack}-s{seed}", step, [f"target-{label}-s{seed}", *judges, *priors]))
    return graph


def _task(preset, root: str, step: tuple, threads: int, *dependencies) -> str:
    """One step in a worker process (its dependencies' results are already in the cache)."""
    from . import _run_step

    _run_step(preset, root, step, threads)
    return "done"


def run_on_cluster(preset, paths, progress: bool = True, scheduler: str | None = None) -> None:
    """Every step of the study as dask tasks with their dependencies, until all are finished
    (a tqdm bar over finished tasks; the scheduler and its dashboard named in ``study.log`` and
    on stderr)."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    client = connect(preset.workers, scheduler, preset.device)
    try:
        info = client.scheduler_info()
        cores = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or preset.workers
        threads = max(1, (os.cpu_count() or 1) // cores) if not scheduler else 1
        log.warning("study %s: dask scheduler %s (%d workers), dashboard %s", preset.name, client.scheduler.address,
                    len(info.get("workers", {})), client.dashboard_link)
        gpu = {"GPU": 1} if _gpu(preset.device) else None
        futures = {}
        for key, step, needs in study_graph(preset, paths.root):
            uses_gpu = gpu if step[0] in ("target", "attack", "eval") else None
            futures[key] = client.submit(_task, preset, str(paths.root), step, threads, *[futures[k] for k in needs],
                                         key=f"{key}-{os.getpid()}", pure=False, retries=2, resources=uses_gpu)
        for future in tqdm(as_completed(list(futures.values())), total=len(futures),
                           desc=f"study {preset.name}: tasks", disable=not progress):
            if future.status == "error":  # e.g. its worker died twice, or a step it needed was lost with one
                log.warning("study %s: task %s failed on the cluster (%s); the study redoes it in this process",
                            preset.name, future.key, str(future.exception()).splitlines()[0][:200])
        # every step is content-addressed: the study's own pass after this one computes what the cluster
        # left undone (a step with a real error raises there, with its own message)
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()
