"""The reference path of the benchmark: B-cos layers computed the way the official code writes them.

Written from reading B-cos-v2 / B-cosification (METHOD.md §1); for benchmarking only. The formula:
conv: squares = x ** 2 (a `pow`, which autocast runs in fp32), channel sum, avg_pool2d with the
conv's window times k*k, + 1e-6, sqrt; linear: torch.linalg.vector_norm(x) + 1e-12 (fp32 under
autocast); B = 2: factor = |z| / norm, else (|z / norm| + 1e-6) ** (B - 1); out = factor * z. The
factor stays fp32 under bf16 autocast, so every layer returns fp32 (the precision bug METHOD.md
names). Uncentered BN: var over (N, H, W), x / sqrt(var + eps), then * gamma (two passes).

`to_reference(tower)` returns a copy whose B-cos modules use these formulas (same parameters).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip import nn as bnn


class ReferenceBcosConv2d(bnn.BcosConv2d):
    """BcosConv2d with the official-style patch norm and scale (groups = 1, no dilation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if self.b == 1.0:
            return out
        squares = (x ** 2).sum(1, keepdim=True)
        kh, kw = self.kernel_size
        norm = (F.avg_pool2d(squares, self.kernel_size, self.stride, self.padding) * (kh * kw)
                + 1e-6).sqrt_()
        return self.dynamic(lambda: _official_factor(out, norm, self.b)) * out


class ReferenceBcosLinear(bnn.BcosLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.b == 1.0:
            return out
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) + 1e-12
        return self.dynamic(lambda: _official_factor(out, norm, self.b)) * out


def _official_factor(out: torch.Tensor, norm: torch.Tensor, b: float) -> torch.Tensor:
    if b == 2.0:
        return out.abs() / norm
    return ((out / norm).abs() + 1e-6).pow(b - 1.0)


class ReferenceUncenteredBatchNorm2d(bnn.UncenteredBatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var = x.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                m = 0.1 if self.momentum is None else self.momentum
                self.running_var.copy_((1 - m) * self.running_var + m * var.detach())
        else:
            var = self.running_var
        result = x / (var + self.eps).sqrt()[None, :, None, None]
        result = self.weight[None, :, None, None] * result
        if self.bias is not None:
            result = result + self.bias[None, :, None, None]
        return result


SWAPS = {
    bnn.BcosConv2d: ReferenceBcosConv2d,
    bnn.BcosLinear: ReferenceBcosLinear,
    bnn.UncenteredBatchNorm2d: ReferenceUncenteredBatchNorm2d,
}


def to_reference(tower: nn.Module) -> nn.Module:
    """A deep copy of a B-cos tower whose conv / linear / BN modules use the official-style formulas.

    Grouped or dilated convs are not part of the CLIP towers and are refused.
    """
    ref = copy.deepcopy(tower)
    for name, mod in ref.named_modules():
        new_cls = SWAPS.get(type(mod))
        if new_cls is None:
            continue
        if isinstance(mod, bnn.BcosConv2d) and (mod.groups != 1 or mod.dilation != (1, 1)):
            raise ValueError(f"to_reference: conv {name!r} has groups/dilation; the reference path "
                             "mirrors only the CLIP towers' plain convs")
        mod.__class__ = new_cls
    return ref
