"""Functional maths of B-cos layers: patch norms and the dynamic B-cos scale (METHOD.md §1).

All functions are pure; the modules in this package call them.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F

IntPair = Union[int, Tuple[int, int]]
NORM_EPS = 1e-6


def as_pair(v: IntPair) -> Tuple[int, int]:
    """A kernel size / stride / padding as (h, w): ``3`` -> (3, 3)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x to accumulate in: half / bf16 inputs are upcast to fp32; fp32 and float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def patch_norm(
    x: torch.Tensor,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    eps: float = NORM_EPS,
) -> torch.Tensor:
    """Norm of every input patch a convolution sees.

    x: (N, C, H, W). Returns (N, groups, H', W') with ||x_patch|| = sqrt(sum over the receptive field
    (k x k x C/groups) of x^2 + eps), computed as a channel sum of squares followed by a box filter,
    never as a full convolution of x^2 with a ones kernel (METHOD.md §1). Computed in >= fp32.
    """
    kh, kw = as_pair(kernel_size)
    ph, pw = as_pair(padding)
    dh, dw = as_pair(dilation)
    n, c, h, w = x.shape
    sq = at_least_fp32(x).square()
    sq = sq.view(n, groups, c // groups, h, w).sum(2) if groups > 1 else sq.sum(1, keepdim=True)
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
        s = as_pair(stride)
        summed = sq[:, :, :: s[0], :: s[1]]
    elif (dh, dw) == (1, 1) and ph <= kh // 2 and pw <= kw // 2:
        summed = F.avg_pool2d(sq, (kh, kw), stride, (ph, pw), count_include_pad=True, divisor_override=1)
    else:
        # avg_pool2d cannot express dilation or wide padding: a 1-channel ones kernel per group is cheap.
        ones = sq.new_ones(groups, 1, kh, kw)
        summed = F.conv2d(sq, ones, None, stride, (ph, pw), (dh, dw), groups=groups)
    return (summed + eps).sqrt()


def vector_norm(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """||x|| over the last dimension, keepdim, >= fp32: x (..., D) -> (..., 1)."""
    return (at_least_fp32(x).square().sum(-1, keepdim=True) + eps).sqrt()


def bcos_factor(z: torch.Tensor, norm: torch.Tensor, b: float) -> torch.Tensor:
    """The dynamic B-cos factor (|z| / ||x||)^(B-1), cast to z's dtype.

    z: pre-activation (any shape); norm: broadcastable to z. B = 2 avoids pow.
    """
    ratio = z.abs() / norm
    if b != 2.0:
        ratio = ratio.pow(b - 1.0)
    return ratio.to(z.dtype)


def grouped_factor(z: torch.Tensor, norm: torch.Tensor, b: float, groups: int) -> torch.Tensor:
    """B-cos factor for a conv output z (N, C_out, H, W) and a per-group patch norm (N, G, H, W)."""
    if groups == 1:
        return bcos_factor(z, norm, b)
    n, c, h, w = z.shape
    zg = z.view(n, groups, c // groups, h, w)
    return bcos_factor(zg, norm.unsqueeze(2), b).view(n, c, h, w)
