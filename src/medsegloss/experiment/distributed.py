"""DistributedDataParallel plumbing for ``fit`` under torchrun: the process group, barriers,
averages and gathers. On one process (``WORLD_SIZE`` unset) every function is a cheap no-op."""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def process_group(device: torch.device, world_size: int):
    """Start the process group for ``world_size > 1`` (NCCL on CUDA, Gloo on CPU) unless one is
    running, and destroy it on exit if this started it."""
    started = world_size > 1 and not torch.distributed.is_initialized()
    if started:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    try:
        yield
    finally:
        if started:
            torch.distributed.destroy_process_group()


def barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def reduce_mean(values: list[torch.Tensor], world_size: int) -> list[float]:
    """Average per-rank values over the ranks (one all_reduce); plain floats on one process."""
    stacked = torch.stack([value.float() for value in values])
    if world_size > 1:
        torch.distributed.all_reduce(stacked)
        stacked /= world_size
    return stacked.tolist()


def broadcast_buffers(model: nn.Module, world_size: int) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank: DDP syncs them only at the
    next forward, so without this each rank would validate another model than best.pt saves."""
    if world_size > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, 0)


def gather_to_first(items: list, rank: int, world_size: int) -> list | None:
    """Every rank's ``items`` concatenated on rank 0 (rank order); None on the other ranks."""
    if world_size == 1:
        return items
    gathered = [None] * world_size if rank == 0 else None
    torch.distributed.gather_object(items, gathered, dst=0)
    return [item for part in gathered for item in part] if rank == 0 else None
