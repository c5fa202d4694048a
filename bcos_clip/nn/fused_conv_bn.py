"""A B-cos conv and the training-mode uncentered BatchNorm after it, on shared kernels (fast-path
feature "conv_bn"; only where the kernels run: Triton on CUDA, or a stand-in such as nn.fused_torch).

Apart, the pair costs two passes the kernels can absorb: the BatchNorm's statistics pass over the
conv's output y (batch_norm_update_stats) and, in backward, the in-place add of the uncentered
BatchNorm's per-channel gradient term (nn.norms). Together:
- forward: the conv's scale kernel writes y and Chan's partial statistics of the stored y
  (nn.fused_layers.BcosConvFn with `stats`); the BatchNorm finds them on y's backward node and runs
  one small kernel (`bn_finalize`: batch mean and variance, the running variance's update, gamma r,
  r, r mean) and the eval-mode native BatchNorm that writes gamma r y;
- backward (`BcosConvBNFn`, one autograd node for both layers, re-rooted at the conv's inputs): the
  native BatchNorm backward told the mean is 0, then the scale's backward kernel adds the missing
  per-channel term (gsum + gw r mean) gamma r / M to g as it reads it, then the conv's backward.
The maths is nn.norms' _UncenteredBNTrain and nn.fused_layers' BcosConvFn, step for step; only the
variance is combined from partials (Chan) instead of one Welford pass. The conv's own node stays valid
for any other use of y; in float64 the same path runs on nn.fused_torch (tests/test_perf_conv_bn.py).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from bcos_clip.nn import fused
from bcos_clip.nn.fused_layers import conv_grads


def pending_stats(y: torch.Tensor) -> Any:
    """y's BcosConvFn backward node when it carries unused statistics of y (y not changed since), else None."""
    node = y.grad_fn
    if getattr(node, "bcos_stats", None) is None or node.bcos_version != y._version:
        return None
    return node


class BcosConvBNFn(torch.autograd.Function):
    """out = gamma r y, y = the B-cos conv of x whose forward ran already (its node `node`); inputs x,
    the conv's weight and bias and gamma; `bn` = (running_var, consts (zeros and ones rows), momentum, eps)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],  # type: ignore[override]
                gamma: torch.Tensor, y: torch.Tensor, node: Any, bn: Tuple[Any, ...]) -> torch.Tensor:
        running_var, consts, momentum, eps = bn
        zeros = consts[0]
        xc, wc, t, s = (u.detach() for u in node.saved_tensors)  # detached: the conv's node is not kept
        total = y.numel() // y.shape[1]
        vec = fused.kernels_for(y).bn_finalize(node.bcos_stats, gamma, running_var, momentum, eps, total)
        node.bcos_stats = node.bcos_inputs = None  # consumed: nothing kept beyond what is saved below
        out, _, _ = torch.native_batch_norm(y, vec[0], None, zeros, consts[1], False, 0.0, 0.0)
        ctx.save_for_backward(xc, wc, t, s, y, gamma, vec, zeros)
        ctx.conv = (node.geometry, node.b, node.eps, node.from_z, bias is not None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        xc, wc, t, s, y, gamma, vec, zeros = ctx.saved_tensors
        geometry, b, eps, from_z, has_bias = ctx.conv
        gy, ggamma, gsum = torch.ops.aten.native_batch_norm_backward(
            g, y, gamma, None, None, zeros, vec[1], True, 0.0, [True, True, True])
        shift = (gsum, ggamma, vec[2], vec[0], y.shape[1] / y.numel())
        gz, gs = fused.scale_backward(gy, t, s, b, 1, eps, from_z, shift=shift)
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2])
        gx, gw, gb = conv_grads(gz, gs, xc, wc, geometry, needs)
        return gx, gw, gb, ggamma.to(gamma.dtype), None, None, None


def conv_bn(node: Any, y: torch.Tensor, gamma: torch.Tensor, running_var: torch.Tensor, consts: torch.Tensor,
            momentum: float, eps: float) -> Optional[torch.Tensor]:
    """The BatchNorm of y (its conv's node from `pending_stats`) as one node with the conv, or None
    where it does not apply (the statistics' dtype differs from gamma's or the running variance's)."""
    dtype = node.bcos_stats[0].dtype
    if gamma.dtype != dtype or running_var.dtype != dtype or fused.kernels_for(y) is None:
        return None
    x, weight, bias = node.bcos_inputs
    return BcosConvBNFn.apply(x, weight, bias, gamma, y.detach(), node,
                              (running_var, consts.to(dtype), momentum, eps))
