"""Distributed evaluation helpers: each rank reads its own shards, rank 0 gathers and scores.

The process group is set up by the caller (the CLI under torchrun); the library only asks
torch.distributed whether one exists.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import torch.distributed as dist


def rank_world() -> Tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def all_gather(obj: Any) -> List[Any]:
    """Every rank's ``obj`` on every rank, in rank order (``[obj]`` for a single process)."""
    _, world = rank_world()
    if world == 1:
        return [obj]
    gathered: List[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered
