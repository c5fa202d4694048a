"""Gated activations written as x * gate(x), with the gate detachable (METHOD.md §2, step 4)."""
from __future__ import annotations

import math

import torch

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


class GatedActivation(DynamicModule):
    """y = x * gate(x) with gate one of GATES ('gelu' = x*Phi(x), 'quick_gelu' = x*sigmoid(1.702x),
    'relu' = x*[x > 0], for towers whose explanation bias pass must replay the ReLU gates)."""

    def __init__(self, kind: str = "gelu") -> None:
        super().__init__()
        if kind not in GATES:
            raise ValueError(f"unknown activation {kind!r}; known: {sorted(GATES)}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.dynamic(lambda: GATES[self.kind](x))

    def extra_repr(self) -> str:
        return self.kind
