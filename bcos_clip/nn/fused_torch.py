"""The kernel interface of nn.fused_triton in torch ops, on any device and in any dtype (float64 too).

It is the twin the Triton kernels are checked against (tests/test_perf_triton.py, Triton's CPU
interpreter), the stand-in under which the kernel-only paths (nn.fused_conv_bn) run on a CPU and in
float64 (`nn.fused.kernel_stand_in(TorchKernels())`, gradcheck), and what the cost model
(apps.bench.cost) counts as one kernel per call. The statistics' partials have one row per image here
(Triton: one per program); `bn_finalize` combines any rows (Chan's formula), and `rows` pads with
empty rows (count 0) to the Triton shape, so that a count of bytes sees the kernel's.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from bcos_clip.nn import fused, fused_triton

Partials = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # mean (R, C), sum of squared deviations (R, C), count (R,)


class TorchKernels:
    """sumsq / scale_fwd / scale_bwd / scale_fwd_stats / bn_finalize / view3 as fused_triton has them."""

    view3 = staticmethod(fused_triton.view3)

    @staticmethod
    def sumsq(x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.to(torch.promote_types(x.dtype, torch.float32)).square().sum(dim, keepdim=True)

    @staticmethod
    def scale_fwd(z: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float) -> torch.Tensor:
        return fused.scale_forward_torch(z, s, b, eps)

    @staticmethod
    def scale_bwd(g: torch.Tensor, y: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float,
                  from_z: bool = False, shift: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return fused.scale_backward_torch(g, y, s, b, dim, eps, from_z, shift)

    @staticmethod
    def scale_fwd_stats(z: torch.Tensor, s: torch.Tensor, b: float, eps: float,
                        rows: Optional[int] = None) -> Tuple[torch.Tensor, Partials]:
        """y = scale_fwd(z, s) for a conv output z (N, C, H, W) and per-image partial statistics of y."""
        y = fused.scale_forward_torch(z, s, b, eps)
        n, c, h, w = y.shape
        var, mean = torch.var_mean(y.to(torch.promote_types(y.dtype, torch.float32)), dim=(2, 3), correction=0)
        cnt = torch.full((n,), float(h * w), dtype=mean.dtype, device=y.device)
        part = (mean, var * (h * w), cnt)
        if rows is not None and rows > n:  # empty rows: the Triton kernel's partials' shape
            part = tuple(torch.cat([t, t.new_zeros((rows - n,) + t.shape[1:])]) for t in part)
        return y, part

    @staticmethod
    def bn_finalize(part: Partials, weight: torch.Tensor, running_var: torch.Tensor, momentum: float,
                    eps: float, total: int) -> torch.Tensor:
        """(3, C): gamma r, r, r mean from the partials; the running variance updated in place."""
        mean_b, m2_b, cnt = part
        mean = (cnt[:, None] * mean_b).sum(0) / total
        var = (m2_b + cnt[:, None] * (mean_b - mean).square()).sum(0) / total
        with torch.no_grad():
            running_var.mul_(1.0 - momentum).add_(var.to(running_var.dtype),
                                                  alpha=momentum * total / max(total - 1.0, 1.0))
        r = torch.rsqrt(var + eps)
        return torch.stack([weight.to(r.dtype) * r, r, r * mean])
