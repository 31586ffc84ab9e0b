"""torch.distributed plumbing for ``torchrun`` (gloo on CPU, NCCL on GPU).

Under ``torchrun --nproc-per-node N -m re_analysis.cli train|attack ...`` the environment
carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; training then runs
DistributedDataParallel with per-rank data shards and attacks shard their class chunks.
Rank 0 writes the artifacts; the other ranks wait at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: torch.device, backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process)."""
    info = dist_info()
    if info.enabled and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def rank_device(device: torch.device) -> torch.device:
    """The GPU of this rank (``cuda:LOCAL_RANK``) or the CPU."""
    if device.type == "cuda" and dist_info().enabled:
        return torch.device("cuda", dist_info().local_rank)
    return device


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over ranks (identity for one process)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP (``.module``) or Opacus (``._module``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner
