"""Gated activations written as x * gate(x), with the gate detachable (METHOD.md §2, step 4)."""
from __future__ import annotations

import math

from typing import Any

import torch
import torch.nn.functional as F

from bcos_clip.nn import fused
from bcos_clip.nn.dynamic import DynamicModule


def _gelu_gate(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


def _gelu_tanh_gate(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _quick_gelu_gate(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(1.702 * x)


def _relu_gate(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


GATES = {"gelu": _gelu_gate, "gelu_tanh": _gelu_tanh_gate, "quick_gelu": _quick_gelu_gate, "relu": _relu_gate}


class QuickGELUFn(torch.autograd.Function):
    """y = x sigmoid(1.702 x), saving x only (autograd of the formula keeps sigmoid(1.702 x) too).
    Backward: g (s + 1.702 x s (1 - s)), s = sigmoid(1.702 x), in >= fp32."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * torch.sigmoid(1.702 * x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        xa = x.to(torch.promote_types(x.dtype, torch.float32))
        s = torch.sigmoid(1.702 * xa)
        return (g * (s + 1.702 * xa * s * (1.0 - s))).to(g.dtype)


def _quick_gelu_fast(x: torch.Tensor) -> torch.Tensor:
    if fused.plain_tensor(x):
        return QuickGELUFn.apply(x)
    return x * torch.sigmoid(1.702 * x)


# the same functions through native kernels (fast-path feature "activation"): they save x only
FAST = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "quick_gelu": _quick_gelu_fast,
        "relu": F.relu}


class GatedActivation(DynamicModule):
    """y = x * gate(x) with gate one of GATES ('gelu' = x*Phi(x), 'quick_gelu' = x*sigmoid(1.702x),
    'relu' = x*[x > 0], for towers whose explanation bias pass must replay the ReLU gates)."""

    def __init__(self, kind: str = "gelu") -> None:
        super().__init__()
        if kind not in GATES:
            raise ValueError(f"unknown activation {kind!r}; known: {sorted(GATES)}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused.feature("activation") and self._dyn_mode is None and not self.detach_dynamic:
            return FAST[self.kind](x)
        return x * self.dynamic(lambda: GATES[self.kind](x))

    def extra_repr(self) -> str:
        return self.kind
