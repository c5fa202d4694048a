"""Whole B-cos layers as one autograd Function each (fast-path feature "layer", nn.fused).

`BcosLinearFn` / `BcosConvFn` compute y = scale(z, s), z = x w^T (or conv(x, w)), s = ||x(_patch)||^2,
with the same primitives as nn.fused (sumsq, scale_forward, scale_backward; Triton on CUDA), and save
what the layer's backward needs once: x and w in the compute dtype (the casts autocast would save),
y (z in fp16, nn.fused.saves_z) and the small map s. Their backward joins the two paths to x that
autograd would add separately (the matmul / conv transpose, and the norm's 2 x gs) with one in-place
addcmul, and skips the separate sum-of-squares node: per layer one read and one write of x fewer, and
four kernels fewer, than SumSquares + BcosScale.

They run outside torch.func transforms and torch.compile (`usable`): there the composable Functions of
nn.fused (vmap rules, jvp) or the formula are used.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

from bcos_clip.nn import fused
from bcos_clip.nn.functional import NORM_EPS

Pair = Tuple[int, int]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul / conv of x runs in: autocast's when it is on for x's device."""
    dev = x.device.type
    if not torch.amp.is_autocast_available(dev):  # e.g. meta tensors
        return x.dtype
    if torch.is_autocast_enabled(dev) and x.is_floating_point() and x.dtype != torch.float64:
        return torch.get_autocast_dtype(dev)
    return x.dtype


def usable(x: torch.Tensor) -> bool:
    """The whole-layer Functions apply: feature on, plain tensor, not compiling."""
    return fused.feature("layer") and fused.plain_tensor(x)


def _norm_grad_into(gx: torch.Tensor, x: torch.Tensor, gsq: torch.Tensor) -> torch.Tensor:
    """gx + 2 x gsq (gsq broadcasts over the reduced axis), in place outside double backward."""
    if torch.is_grad_enabled():
        return gx + 2.0 * x * gsq.to(x.dtype)
    return gx.addcmul_(x, gsq, value=2.0)


class BcosLinearFn(torch.autograd.Function):
    """y = scale(x w^T + bias, sum_d x^2) over the last dim of x (..., D_in) -> (..., D_out)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], b: float,
                eps: float, dtype: torch.dtype) -> torch.Tensor:  # type: ignore[override]
        xc, wc = x.to(dtype), weight.to(dtype)
        z = F.linear(xc, wc, None if bias is None else bias.to(dtype))
        s = fused.sumsq(x, -1)
        y = fused.scale_forward(z, s, b, -1, eps)
        ctx.from_z = fused.saves_z(z.dtype)
        ctx.save_for_backward(xc, wc, z if ctx.from_z else y, s)
        ctx.b, ctx.eps, ctx.has_bias = b, eps, bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        xc, wc, t, s = ctx.saved_tensors
        gz, gs = fused.scale_backward(g, t, s, ctx.b, -1, ctx.eps, ctx.from_z)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _norm_grad_into(torch.matmul(gz, wc), xc, gs)
        if ctx.needs_input_grad[1]:
            gw = gz.reshape(-1, gz.shape[-1]).t().matmul(xc.reshape(-1, xc.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gz.reshape(-1, gz.shape[-1]).sum(0)
        return gx, gw, gb, None, None, None


def box_sum_adjoint(gs: torch.Tensor, in_hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair,
                    dilation: Pair) -> torch.Tensor:
    """The adjoint of fused.box_sum: (N, 1, H', W') -> (N, 1, H, W), each window's value added to
    every input position of that window (zero padding dropped)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, h, w = gs.shape[0], in_hw[0], in_hw[1]
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
        if (sh, sw) == (1, 1):
            return gs
        out = gs.new_zeros(n, 1, h, w)
        out[:, :, ::sh, ::sw] = gs
        return out
    same = (sh, sw) == (1, 1) and dilation == (1, 1) and 2 * ph == kh - 1 and 2 * pw == kw - 1
    if same:  # a stride-1 "same" box sum is self-adjoint: the fast pooling kernel, not its backward
        return F.avg_pool2d(gs, (kh, kw), 1, (ph, pw), count_include_pad=True, divisor_override=1)
    ones = gs.new_ones(1, 1, kh, kw)
    extra = tuple(size - ((o - 1) * st - 2 * p + d * (k - 1) + 1)
                  for size, o, st, p, d, k in zip((h, w), gs.shape[2:], stride, padding, dilation, kernel_size))
    return F.conv_transpose2d(gs, ones, None, stride, padding, extra, 1, dilation)


class BcosConvFn(torch.autograd.Function):
    """y = scale(conv(x, w) + bias, box_sum(sum_c x^2)) for a groups=1 conv; x (N, C_in, H, W).

    With `stats` (kernels in use, see nn.fused_conv_bn) the scale kernel also writes the partial
    per-channel statistics of y, kept on the backward node as `bcos_stats` for a BatchNorm after it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                geometry: Tuple[Pair, Pair, Pair, Pair], b: float, eps: float,
                dtype: torch.dtype, stats: bool) -> torch.Tensor:  # type: ignore[override]
        kernel, stride, padding, dilation = geometry
        xc, wc = x.to(dtype), weight.to(dtype)
        z = F.conv2d(xc, wc, None if bias is None else bias.to(dtype), stride, padding, dilation)
        s = fused.box_sum(fused.sumsq(x, 1), kernel, stride, padding, dilation)
        ctx.bcos_stats = ctx.bcos_inputs = None
        if stats and fused.kernels_for(z, s) is not None:
            y, ctx.bcos_stats = fused.scale_forward_stats(z, s, b, eps)
            ctx.bcos_inputs, ctx.bcos_version = (x, weight, bias), y._version
        else:
            y = fused.scale_forward(z, s, b, 1, eps)
        ctx.from_z = fused.saves_z(z.dtype)
        ctx.save_for_backward(xc, wc, z if ctx.from_z else y, s)
        ctx.geometry, ctx.b, ctx.eps, ctx.has_bias = geometry, b, eps, bias is not None
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        xc, wc, t, s = ctx.saved_tensors
        gz, gs = fused.scale_backward(g, t, s, ctx.b, 1, ctx.eps, ctx.from_z)
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        return conv_grads(gz, gs, xc, wc, ctx.geometry, needs) + (None, None, None, None, None)


def conv_grads(gz: torch.Tensor, gs: torch.Tensor, xc: torch.Tensor, wc: torch.Tensor,
               geometry: Tuple[Pair, Pair, Pair, Pair], needs: Tuple[bool, bool, bool]
               ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(grad_x, grad_w, grad_bias) of a B-cos conv from the scale's gradients: the conv's backward, and
    the norm's 2 x box_sum_adjoint(gs) added into grad_x in place; `needs` says which are wanted."""
    kernel, stride, padding, dilation = geometry
    gx, gw, gb = torch.ops.aten.convolution_backward(
        gz, xc, wc, [wc.shape[0]] if needs[2] else None, list(stride), list(padding), list(dilation),
        False, [0, 0], 1, list(needs))
    if needs[0]:
        gsq = box_sum_adjoint(gs, tuple(xc.shape[2:]), kernel, stride, padding, dilation)
        gx = _norm_grad_into(gx, xc, gsq)
    return gx, gw, gb


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], b: float,
           eps: float = NORM_EPS) -> torch.Tensor:
    """A B-cos linear layer on the fast path: the whole-layer Function where usable, else the
    composable Functions (torch.func, compile)."""
    if usable(x):
        return BcosLinearFn.apply(x, weight, bias, float(b), eps, compute_dtype(x))
    return fused.linear_scale(x, F.linear(x, weight, bias), b, eps)


def conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], kernel: Pair, stride: Pair,
         padding: Pair, dilation: Pair, b: float, eps: float = NORM_EPS) -> torch.Tensor:
    """A groups=1 B-cos conv on the fast path (see `linear`)."""
    if usable(x):
        stats = fused.feature("conv_bn") and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        return BcosConvFn.apply(x, weight, bias, (kernel, stride, padding, dilation), float(b), eps,
                                compute_dtype(x), stats)
    z = F.conv2d(x, weight, bias, stride, padding, dilation)
    return fused.conv_scale(x, z, kernel, stride, padding, dilation, b, eps)
