"""torch.distributed setup for data-parallel training (train-rnn, finetune-llama) under
torchrun or srun.

A run is distributed when WORLD_SIZE > 1 in the environment; then RANK, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT must be set too (torchrun sets all five; under srun export them
from SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS and the first node's address). The backend is
nccl for CUDA and gloo for CPU. Only rank 0 writes files; every rank must call the collective
helpers in the same order.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from lyricgen.errors import LyricgenInputError

REQUIRED_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank layout from the environment (single process when WORLD_SIZE is unset or 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise LyricgenInputError(f"environment: WORLD_SIZE={world} but {', '.join(missing)} "
                                 f"unset (launch with torchrun or export them under srun)")
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))


def init(info: DistInfo, device_type: str) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU); a no-op for one process."""
    if not info.enabled or torch_dist.is_initialized():
        return
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    torch_dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def shutdown(info: DistInfo) -> None:
    """Leave the process group. Drop every DistributedDataParallel wrapper first: one still
    alive keeps the gloo group alive past destroy_process_group, and its threads then abort
    the process at interpreter exit ("terminate called without an active exception"). The
    gc pass collects wrappers that are unreferenced but sit in reference cycles."""
    if info.enabled and torch_dist.is_initialized():
        gc.collect()
        torch_dist.destroy_process_group()


def all_reduce(values: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """The elementwise "sum" or "max" of `values` over ranks, as a new tensor (a copy for one
    process)."""
    total = values.detach().clone()
    if info.enabled:
        reduce_op = {"sum": torch_dist.ReduceOp.SUM, "max": torch_dist.ReduceOp.MAX}[op]
        torch_dist.all_reduce(total, op=reduce_op)
    return total


def all_gather_object(value: Any, info: DistInfo) -> list[Any]:
    """[value of rank 0, value of rank 1, ...] on every rank (picklable values; [value] for one
    process)."""
    if not info.enabled:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(gathered, value)
    return gathered


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch_dist.barrier()
