"""Distributed evaluation helpers: each rank reads its own shards, rank 0 gathers and scores.

The process group is set up by the caller (the CLI under torchrun); the library only asks
torch.distributed whether one exists.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch.distributed as dist


def rank_world() -> Tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def gather_to_main(obj: Any) -> Optional[List[Any]]:
    """Every rank's ``obj`` (CPU tensors, lists) as a list on rank 0, in rank order; None elsewhere.

    Uses ``all_gather_object`` (works with gloo and nccl); a single process gets ``[obj]``.
    """
    rank, world = rank_world()
    if world == 1:
        return [obj]
    gathered: List[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered if rank == 0 else None


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    _, world = rank_world()
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()
