"""Input encoding of B-cos towers: AddInverse and the CLIP normalisation folded into the first conv."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def add_inverse(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 6, H, W) = [x, 1 - x]."""
    return torch.cat([images, 1.0 - images], dim=1)


class AddInverse(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return add_inverse(images)


def fold_normalization(weight: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """First-conv weight (C_out, 3, ...) -> (C_out, 6, ...) acting on [x, 1-x] as w on (x - m) / s.

    W_c (1-m_c)/s_c * x_c - W_c m_c/s_c * (1 - x_c) = W_c (x_c - m_c)/s_c: exact, bias-free, and zero
    padding stays consistent (METHOD.md §2, step 2).
    """
    shape = (1, -1) + (1,) * (weight.dim() - 2)
    m = torch.as_tensor(mean, dtype=weight.dtype, device=weight.device).view(shape)
    s = torch.as_tensor(std, dtype=weight.dtype, device=weight.device).view(shape)
    return torch.cat([weight * (1.0 - m) / s, -weight * m / s], dim=1)


def official_first_weight(weight: torch.Tensor) -> torch.Tensor:
    """The official code's first conv for its 6-channel Normalize: cat([W, -W]) / 2 (compat mode)."""
    return torch.cat([weight, -weight], dim=1) / 2.0


class Normalize6(nn.Module):
    """The official code's 6-channel Normalize, mean (m, 1-m), std (s, s). Compatibility mode only."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        m = torch.tensor(list(mean) + [1.0 - v for v in mean]).view(1, 6, 1, 1)
        s = torch.tensor(list(std) + list(std)).view(1, 6, 1, 1)
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x6: torch.Tensor) -> torch.Tensor:
        return (x6 - self.mean.to(x6.dtype)) / self.std.to(x6.dtype)
