"""BcosLinear: a B-cosified linear layer with the pretrained (un-normalised) weight (METHOD.md §1)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.nn import fused, fused_layers
from bcos_clip.nn.dynamic import DynamicModule
from bcos_clip.nn.functional import bcos_factor, vector_norm


class BcosLinear(DynamicModule):
    """y = z * (|z| / ||x||)^(B-1), z = x @ w.T (+ b). Input (..., in) -> (..., out).

    `fast` (default True): outside dynamic modes use bcos_clip.nn.fused; False: the reference formula.
    """

    fast: bool = True

    def __init__(self, in_features: int, out_features: int, bias: bool = False, b: float = 2.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.b = float(b)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=in_features ** -0.5)

    @classmethod
    def from_linear(cls, linear: nn.Linear, b: float = 2.0, bias: bool = False) -> "BcosLinear":
        return cls.from_weight(linear.weight, linear.bias if bias else None, b=b)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    b: float = 2.0) -> "BcosLinear":
        """From a (out, in) weight, e.g. a slice of a packed in_proj or a transposed `proj`."""
        new = cls(weight.shape[1], weight.shape[0], bias=bias is not None, b=b)
        new = new.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.weight.copy_(weight)
            if bias is not None:
                new.bias.copy_(bias)
        return new

    def factor(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return bcos_factor(z, vector_norm(x), self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.b != 1.0 and fused.applies(self):
            return fused_layers.linear(x, self.weight, self.bias, self.b)
        z = F.linear(x, self.weight, self.bias)
        if self.b == 1.0:
            return z
        return z * self.dynamic(lambda: self.factor(x, z))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, b={self.b}"
