"""BcosConv2d: a B-cosified convolution with the pretrained (un-normalised) weight (METHOD.md §1)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.nn import fused, fused_layers
from bcos_clip.nn.dynamic import DynamicModule
from bcos_clip.nn.functional import as_pair, grouped_factor, patch_norm


class BcosConv2d(DynamicModule):
    """y = z * (|z| / ||x_patch||)^(B-1) with z = conv(x, w) (+ b when a bias is kept).

    For B = 1 it is the plain convolution. Input (N, C_in, H, W) -> (N, C_out, H', W').
    `fast` (default True): outside dynamic modes, groups=1 layers use bcos_clip.nn.fused (same function,
    fewer memory passes); False keeps the reference formula below.
    """

    fast: bool = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Tuple[int, int],
        stride: int | Tuple[int, int] = 1,
        padding: int | Tuple[int, int] = 0,
        dilation: int | Tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        b: float = 2.0,
    ) -> None:
        super().__init__()
        if isinstance(padding, str):
            raise ValueError(f"BcosConv2d: string padding {padding!r} is not supported; give integers")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_pair(kernel_size)
        self.stride, self.padding, self.dilation = as_pair(stride), as_pair(padding), as_pair(dilation)
        self.groups = groups
        self.b = float(b)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, b: float = 2.0, bias: bool = False,
                  weight: Optional[torch.Tensor] = None) -> "BcosConv2d":
        """Copy a pretrained conv. `weight` replaces conv.weight (e.g. the 6-channel first conv)."""
        w = conv.weight if weight is None else weight
        keep_bias = bias and conv.bias is not None
        new = cls(w.shape[1] * conv.groups, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, bias=keep_bias, b=b)
        new = new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if keep_bias:
                new.bias.copy_(conv.bias)
        return new

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def factor(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        norm = patch_norm(x, self.kernel_size, self.stride, self.padding, self.dilation, self.groups)
        return grouped_factor(z, norm, self.b, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.b != 1.0 and self.groups == 1 and fused.applies(self):
            return fused_layers.conv(x, self.weight, self.bias, self.kernel_size, self.stride, self.padding,
                                     self.dilation, self.b)
        z = self.linear(x)
        if self.b == 1.0:
            return z
        return z * self.dynamic(lambda: self.factor(x, z))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"bias={self.bias is not None}, b={self.b}")
