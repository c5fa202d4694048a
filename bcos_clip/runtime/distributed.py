"""torchrun / DDP helpers: the only place in the library that reads the torchrun environment.

``torchrun --nproc_per_node N -m bcos_clip.cli train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; the process group uses nccl on CUDA and gloo on CPU.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

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


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else cpu."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but CUDA is not available")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    return device


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1), else single process."""
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


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` on one process)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_module_(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (the frozen teacher)."""
    if not info.distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def replica_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes: equal on all ranks when the replicas agree."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
