"""Optimiser, learning-rate schedule and gradient clipping (adaptive unit-wise, and global norm)."""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List, Optional

import torch
from torch import nn

from bcos_clip.train.config import TrainConfig

OPTIMIZERS: Dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam / AdamW over the trainable parameters (the paper: Adam, lr 1e-4, no weight decay)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters")
    return OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                     weight_decay=cfg.wd)


def lr_at(step: int, base_lr: float, total_steps: int, warmup: int = 0, schedule: str = "cosine") -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine to 0 (or const)."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "const":
        return base_lr
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm per output unit: over all dims but the first for >= 2-D tensors, whole tensor otherwise."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(params: Iterable[nn.Parameter], clip: float = 0.01, eps: float = 1e-3) -> None:
    """Adaptive gradient clipping (Brock et al. 2021), unit-wise, in place.

    For each unit ``max_norm = clip * max(||w||, eps)``; a gradient with ``||g|| > max_norm`` is
    rescaled to ``max_norm``. The B-cos paper trains with clip 0.01, eps 1e-3.
    """
    for p in params:
        if p.grad is None:
            continue
        w_norm = unitwise_norm(p.detach().float()).clamp_(min=eps)
        g = p.grad.detach()
        g_norm = unitwise_norm(g.float())
        max_norm = w_norm * clip
        scale = torch.where(g_norm > max_norm, max_norm / g_norm.clamp(min=1e-6), torch.ones_like(g_norm))
        g.mul_(scale.to(g.dtype))


def grad_norm(params: List[nn.Parameter]) -> torch.Tensor:
    """Global L2 norm of the gradients (float32 scalar; inf / nan when a gradient is non-finite)."""
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.stack(norms).norm()


def clip_gradients_(params: List[nn.Parameter], agc_clip: float, agc_eps: float,
                    max_norm: Optional[float]) -> torch.Tensor:
    """AGC (when ``agc_clip`` > 0), then global norm clipping (when ``max_norm``).

    Returns:
        the global gradient norm before clipping (to log and to detect non-finite gradients).
    """
    norm = grad_norm(params)
    if not torch.isfinite(norm):
        return norm
    if agc_clip > 0:
        adaptive_clip_grad_(params, agc_clip, agc_eps)
    if max_norm:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm
