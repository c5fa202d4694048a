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
    """The official code's 6-channel Normalize, mean (m, 1-m), std (s, s). Compatibility mode only.

    Like torchvision's Normalize (which the official code uses), the constants are Python floats
    turned into tensors of the input's dtype: float64 inputs get float64 constants (not float32 ones).
    They are not part of the state dict (LEGACY_KEYS: what older checkpoints stored).
    """

    LEGACY_KEYS = ("mean", "std")

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean_values = tuple(float(v) for v in mean) + tuple(1.0 - float(v) for v in mean)
        self.std_values = tuple(float(v) for v in std) * 2

    def forward(self, x6: torch.Tensor) -> torch.Tensor:
        """x6: (N, 6, H, W) = [x, 1-x] -> ((x6 - mean) / std), in x6's dtype."""
        m = torch.tensor(self.mean_values, dtype=x6.dtype, device=x6.device).view(1, 6, 1, 1)
        s = torch.tensor(self.std_values, dtype=x6.dtype, device=x6.device).view(1, 6, 1, 1)
        return (x6 - m) / s

    def extra_repr(self) -> str:
        return f"mean={self.mean_values}, std={self.std_values}"
