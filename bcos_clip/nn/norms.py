"""Norm layers of a B-cos tower: uncentered BatchNorm and centered, bias-free LayerNorm (METHOD.md §2)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.nn.dynamic import DynamicModule
from bcos_clip.nn import fused, fused_conv_bn
from bcos_clip.nn.functional import at_least_fp32


class _UncenteredBNTrain(torch.autograd.Function):
    """Training-mode uncentered BN, y = x * gamma * r, r = (var_batch + eps)^-1/2, on native BatchNorm
    kernels; saves x and per-channel statistics only (autograd of the formula keeps an fp32 copy of
    every activation for the variance and runs ~9 fp32 passes backward).

    Forward: `batch_norm_update_stats` reads x once for fp32 batch mean and variance and updates the
    running variance (unbiased, with the momentum; the running mean goes to a scratch row); an eval-mode
    native BatchNorm with mean 0, variance 1 and weight gamma * r computes x * gamma * r in one pass (one
    rounding). Backward, with M = N*H*W: a training-mode native BatchNorm backward told the mean
    is 0 returns g gamma r - gamma r G / M - gamma r^3 A x / M, G = sum g, and A r = sum g x r
    (= dL/dgamma), where dL/dx = g gamma r - gamma r^3 A (x - mu) / M; the difference is the
    per-channel constant gamma r (G + r^2 A mu) / M, added in place.
    `consts` is (3, C): zeros, ones and a scratch row, in the statistics' dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, running_var: torch.Tensor, consts: torch.Tensor,
                momentum: float, eps: float) -> torch.Tensor:  # type: ignore[override]
        w = weight.to(consts.dtype)
        rv = running_var.to(consts.dtype)  # the kernel wants one statistics dtype (pure bf16 weights: a copy)
        mean, var = torch.batch_norm_update_stats(x, consts[2], rv, momentum)
        if rv is not running_var:
            running_var.copy_(rv)
        r = var.add_(eps).rsqrt_()
        s = w * r
        y, _, _ = torch.native_batch_norm(x, s, None, consts[0], consts[1], False, 0.0, 0.0)
        ctx.save_for_backward(x, w, r * mean, r, s, consts[0])
        ctx.weight_dtype = weight.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, w, rmean, r, s, zeros = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        gx, gw, gsum = torch.ops.aten.native_batch_norm_backward(
            g, x, w, None, None, zeros, r, True, 0.0, [need_x, True, True])
        if need_x:
            c = torch.addcmul(gsum, gw, rmean).mul_(s)
            gx.add_(c[None, :, None, None], alpha=x.shape[1] / x.numel())
        return gx, gw.to(ctx.weight_dtype), None, None, None, None


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
        # zeros, ones and a scratch row for the fast training path's native kernels (not part of the state)
        self.register_buffer("_consts", torch.stack([torch.zeros(num_features), torch.ones(num_features),
                                                     torch.zeros(num_features)]), persistent=False)

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
            self.running_var.mul_(1.0 - m).add_(var.detach().to(self.running_var.dtype),
                                                alpha=m * n / max(n - 1.0, 1.0))  # unbiased

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and fused.feature("batchnorm") and fused.plain_tensor(x):
            m = 0.1 if self.momentum is None else self.momentum
            consts = self._consts.to(torch.promote_types(x.dtype, torch.float32))
            node = fused_conv_bn.pending_stats(x) if fused.feature("conv_bn") else None
            y = None if node is None else fused_conv_bn.conv_bn(node, x, self.weight, self.running_var, consts,
                                                                 m, self.eps)
            if y is None:
                y = _UncenteredBNTrain.apply(x, self.weight, self.running_var, consts, m, self.eps)
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
        if self.centered and fused.feature("layernorm") and self._dyn_mode is None and not self.detach_dynamic:
            # the same function through the native kernel: it saves x and per-row statistics (the
            # formula also keeps x - mean, an fp32 copy of it and (x - mean) / std). Without autocast:
            # x's dtype in and out with fp32 statistics (CUDA autocast would upcast x to fp32).
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        xc = x - x.mean(-1, keepdim=True) if self.centered else x
        inv_std = self.dynamic(
            lambda: torch.rsqrt(at_least_fp32(xc).square().mean(-1, keepdim=True) + self.eps).to(x.dtype))
        y = xc * inv_std * self.weight.to(x.dtype)
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}" + ("" if self.centered else ", uncentered")
