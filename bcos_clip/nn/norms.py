"""Norm layers of a B-cos tower: uncentered BatchNorm and centered, bias-free LayerNorm (METHOD.md §2)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from bcos_clip.nn.dynamic import DynamicModule
from bcos_clip.nn.functional import at_least_fp32
from bcos_clip.nn.fused import fast_path_enabled


class _UncenteredBNTrain(torch.autograd.Function):
    """Training-mode uncentered BN, y = x * gamma / sqrt(var_batch + eps), saving only x and per-channel
    statistics (autograd of the formula keeps an fp32 copy of every activation for the variance).

    Backward, with s = gamma * r, r = (var + eps)^-1/2, A = sum_{n,h,w} g * x (per channel), M = N*H*W:
    dL/dx = g * s - A * gamma * r^3 * (x - mu) / M and dL/dgamma = A * r.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float):  # type: ignore[override]
        var, mean = torch.var_mean(at_least_fp32(x), dim=(0, 2, 3), correction=0)
        r = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, r)
        return x * (at_least_fp32(weight) * r).to(x.dtype)[None, :, None, None], var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor, _gvar: torch.Tensor):  # type: ignore[override]
        x, weight, mean, r = ctx.saved_tensors
        m = x.numel() / x.shape[1]
        gamma, g32, x32 = at_least_fp32(weight), at_least_fp32(g), at_least_fp32(x)
        a = (g32 * x32).sum(dim=(0, 2, 3))
        gx = (g32 * (gamma * r)[None, :, None, None]
              - (a * gamma * r.pow(3) / m)[None, :, None, None] * (x32 - mean[None, :, None, None]))
        return gx.to(x.dtype), (a * r).to(weight.dtype), None


class UncenteredBatchNorm2d(nn.Module):
    """y = gamma * x / sqrt(var + eps) (+ bias). Batch variance in training, running variance in eval.

    `from_batchnorm(bn, bias=True)` folds the centring -gamma*mu/sigma + beta into the bias, so that in
    eval mode the layer equals the original BatchNorm exactly. Input (N, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 bias: bool = False) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features)) if bias else None
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, bias: bool = False) -> "UncenteredBatchNorm2d":
        new = cls(bn.num_features, bn.eps, bn.momentum, bias=bias).to(bn.running_var.device)
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
        with torch.no_grad():
            new.weight.copy_(gamma)
            new.running_var.copy_(bn.running_var)
            if bias:
                beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(gamma)
                new.bias.copy_(beta - gamma * bn.running_mean / torch.sqrt(bn.running_var + bn.eps))
        return new

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel multiplier gamma / sqrt(var + eps), shape (C,)."""
        if self.training:
            var = at_least_fp32(x).var(dim=(0, 2, 3), unbiased=False)
            self._update_running_var(var, x)
        else:
            var = at_least_fp32(self.running_var)
        return at_least_fp32(self.weight) * torch.rsqrt(var + self.eps)

    def _update_running_var(self, var: torch.Tensor, x: torch.Tensor) -> None:
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            m = 0.1 if self.momentum is None else self.momentum
            unbiased = var.detach() * (n / max(n - 1.0, 1.0))
            self.running_var.mul_(1.0 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and fast_path_enabled() and not torch.compiler.is_compiling():
            y, var = _UncenteredBNTrain.apply(x, self.weight, self.eps)
            self._update_running_var(var, x)
        else:  # the reference formula (also what torch.compile sees)
            y = x * self.scale(x).to(x.dtype)[None, :, None, None]
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)[None, :, None, None]
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, bias={self.bias is not None}"


class BcosLayerNorm(DynamicModule):
    """LayerNorm over the last dim with a detachable std: (x - mean) / std * weight (+ bias).

    Mean subtraction is linear; in explanation mode the std is a detached (dynamic) factor.
    ``centered=False``: no mean subtraction, x / rms(x) * weight (an RMS norm; rms detachable).
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False, centered: bool = True) -> None:
        super().__init__()
        self.dim, self.eps, self.centered = dim, eps, centered
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    @classmethod
    def from_layernorm(cls, ln: nn.LayerNorm, bias: bool = False, centered: bool = True) -> "BcosLayerNorm":
        dim = ln.normalized_shape[-1]
        new = cls(dim, ln.eps, bias=bias and ln.bias is not None, centered=centered)
        with torch.no_grad():
            if ln.weight is not None:
                new.weight.copy_(ln.weight)
            if new.bias is not None:
                new.bias.copy_(ln.bias)
        return new.to(ln.weight.device if ln.weight is not None else "cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x - x.mean(-1, keepdim=True) if self.centered else x
        inv_std = self.dynamic(
            lambda: torch.rsqrt(xc.float().square().mean(-1, keepdim=True) + self.eps).to(x.dtype))
        y = xc * inv_std * self.weight.to(x.dtype)
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}" + ("" if self.centered else ", uncentered")
