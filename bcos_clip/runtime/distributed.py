"""torchrun / DDP helpers: the only place in the library that reads the torchrun environment.

``torchrun --nproc_per_node N -m bcos_clip.cli train ...`` (or ``... eval ...``) sets RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT; :func:`init_distributed` joins the process group (nccl on CUDA, gloo
on CPU). Training passes the :class:`DistInfo` around; evaluation asks the current process group
(:func:`rank_world`, :func:`all_gather`), so it also runs inside a group its caller set up.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.distributed as dist

from bcos_clip.runtime.device import pick_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(requested_device: Optional[str] = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1), else single process.

    The device is ``pick_device(requested_device, LOCAL_RANK)``: ``cuda:<local rank>`` for ``auto`` or
    ``cuda`` on a CUDA machine."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("rank %d/%d initialised (%s, %s)", rank, world, backend, device)
    return DistInfo(rank, world, local_rank, device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``value`` over ranks (returns a new tensor; identity on one process)."""
    if not info.distributed:
        return value.clone()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on any rank (all ranks agree, so none skips a collective alone)."""
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    return bool(all_reduce_sum(t, info).item() > 0)


def rank_world() -> Tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Rank 0 of the current process group (or no group)."""
    return rank_world()[0] == 0


def all_gather(obj: Any) -> List[Any]:
    """Every rank's ``obj`` on every rank, in rank order (``[obj]`` for a single process)."""
    _, world = rank_world()
    if world == 1:
        return [obj]
    gathered: List[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_module_(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (the frozen teacher)."""
    if not info.distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)
