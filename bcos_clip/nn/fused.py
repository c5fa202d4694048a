"""The fast path of B-cos layers: the B-cos scale in as few memory passes as possible.

The reference path is the straightforward formula in `BcosConv2d.forward` / `BcosLinear.forward`
(z * dynamic((|z| / ||x||)^(B-1))); it is the only path when a dynamic mode is active (explanation
mode's detach, record, replay), because those act on the factor itself. Otherwise the layers call
`conv_scale` / `linear_scale` here, which compute the same function with two autograd Functions:

- `SumSquares`: s = sum over the reduced axis of x^2 in fp32 (one read of x; backward 2 x g);
- `BcosScale`: y = z * (|z| / sqrt(s + eps))^(B-1), in z's dtype and memory layout. It saves only
  y and the small map s: the factor is recomputed from them in backward
  (f = (|y| inv)^((B-1)/B), inv = 1/sqrt(s + eps); for B = 2, f = sqrt(|y| inv), no pow), so z is
  freed after the forward and y is the tensor the next layer saves anyway.
  grad_z = B g f,  grad_s = (1-B)/2 inv^2 sum_c g y.

On CUDA the Functions run Triton kernels (bcos_clip.nn.fused_triton) when Triton is installed; on
CPU, under vmap (`generate_vmap_rule`, used by batched explanation backwards), for forward-mode AD
(`jvp`) and for double backward they run plain torch ops. Under torch.compile the same formulas are
traced as plain differentiable ops: inductor fuses them and its partitioner chooses what to save.

Switches: `set_fast_path(False)` (global) or `module.fast = False` (one layer) selects the reference
formula; `set_triton(False)` keeps the Functions but uses the torch ops on CUDA too.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from bcos_clip.nn.functional import NORM_EPS, as_pair

_STATE: Dict[str, bool] = {"fast": True, "triton": True}
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def set_fast_path(enabled: bool) -> None:
    """Globally select the fast path (True, default) or the reference formula (False)."""
    _STATE["fast"] = bool(enabled)


def fast_path_enabled() -> bool:
    return _STATE["fast"]


def set_triton(enabled: bool) -> None:
    """Use Triton kernels for the fast path on CUDA (default True, when Triton is installed)."""
    _STATE["triton"] = bool(enabled)


@contextlib.contextmanager
def fast_path(enabled: bool = True, triton: Optional[bool] = None) -> Iterator[None]:
    """Temporarily select the fast path (and optionally Triton); restored on exit."""
    before = dict(_STATE)
    try:
        set_fast_path(enabled)
        if triton is not None:
            set_triton(triton)
        yield
    finally:
        _STATE.update(before)


def applies(module: Any) -> bool:
    """Whether `module` (a BcosConv2d / BcosLinear) may take the fast path now: enabled globally and
    on the module, and no dynamic mode (detach / record / replay) active on it."""
    return (_STATE["fast"] and getattr(module, "fast", True) and module._dyn_mode is None
            and not module.detach_dynamic)


def _plain_tensor(t: torch.Tensor) -> bool:
    """False for functorch-wrapped tensors (vmap / grad transforms) and under torch.compile."""
    if torch.compiler.is_compiling():
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(t)


@functools.lru_cache(maxsize=None)
def _kernels() -> Any:
    """bcos_clip.nn.fused_triton if Triton imports, else None (imported on the first CUDA call)."""
    from bcos_clip.nn import fused_triton

    return fused_triton if fused_triton.available() else None


def _use_triton(*tensors: torch.Tensor) -> bool:
    if torch.compiler.is_compiling() or not _STATE["triton"]:
        return False
    if not all(t.is_cuda for t in tensors) or _kernels() is None:
        return False
    return all(t.dtype in _TRITON_DTYPES and _plain_tensor(t) for t in tensors)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _dense(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t itself when the Triton view accepts its strides, else a contiguous copy (inputs only read)."""
    try:
        _kernels().view3(t, dim)
        return t
    except ValueError:
        return t.contiguous()


def _dense_out(t: torch.Tensor) -> torch.Tensor:
    """t when empty_like(t) has t's strides (contiguous or channels_last), else a contiguous copy:
    the kernels write their output with the strides of this tensor."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()


class SumSquares(torch.autograd.Function):
    """s = sum over `dim` of x^2 (keepdim), accumulated in >= fp32. Backward: 2 x g (x's dtype)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
        if _use_triton(x):
            return _kernels().sumsq(_dense(x, dim), dim)
        return x.to(_acc_dtype(x.dtype)).square().sum(dim, keepdim=True)

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
        x, dim = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.dim = dim

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], None]:
        (x,) = ctx.saved_tensors
        return x * (2.0 * g).to(x.dtype), None

    @staticmethod
    def jvp(ctx: Any, dx: torch.Tensor, _: Any) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        acc = _acc_dtype(x.dtype)
        return 2.0 * (x.to(acc) * dx.to(acc)).sum(ctx.dim, keepdim=True)


def _scale_forward_torch(z: torch.Tensor, s: torch.Tensor, b: float, eps: float) -> torch.Tensor:
    acc = _acc_dtype(z.dtype)
    f = z.abs().to(acc) / (s.to(acc) + eps).sqrt()  # the reference's rounding, op for op
    if b != 2.0:
        f = f.pow(b - 1.0)
    return z * f.to(z.dtype)


def _scale_backward_torch(g: torch.Tensor, y: torch.Tensor, s: torch.Tensor, b: float, dim: int,
                          eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    acc = _acc_dtype(y.dtype)
    inv = torch.rsqrt(s.to(acc) + eps)
    t = y.abs().to(acc) * inv
    f = t.sqrt() if b == 2.0 else t.pow((b - 1.0) / b)
    ga = g.to(acc)
    gz = (b * ga * f).to(g.dtype)
    gs = ((1.0 - b) / 2.0) * inv.square() * (ga * y.to(acc)).sum(dim, keepdim=True)
    return gz, gs.to(s.dtype)


class BcosScale(torch.autograd.Function):
    """y = z * (|z| / sqrt(s + eps))^(b-1); s broadcasts over `dim`. Saves y and s only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float) -> torch.Tensor:
        if _use_triton(z, s):
            return _kernels().scale_fwd(_dense_out(z), s.contiguous(), b, dim, eps)
        return _scale_forward_torch(z, s, b, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
        _, s, b, dim, eps = inputs
        ctx.save_for_backward(output, s)
        ctx.save_for_forward(output, s)
        ctx.b, ctx.dim, ctx.eps = b, dim, eps

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        y, s = ctx.saved_tensors
        if _use_triton(g, y, s) and not torch.is_grad_enabled():
            gz, gs = _kernels().scale_bwd(_dense(g, ctx.dim), _dense_out(y), s.contiguous(),
                                            ctx.b, ctx.dim, ctx.eps)
            gs = gs.to(s.dtype)
        else:
            gz, gs = _scale_backward_torch(g, y, s, ctx.b, ctx.dim, ctx.eps)
        return gz, gs, None, None, None

    @staticmethod
    def jvp(ctx: Any, dz: torch.Tensor, ds: torch.Tensor, *_: Any) -> torch.Tensor:
        """dy = B f dz + (1-B)/2 inv^2 y ds (forward-mode AD, torch ops)."""
        y, s = ctx.saved_tensors
        b = ctx.b
        acc = _acc_dtype(y.dtype)
        inv = torch.rsqrt(s.to(acc) + ctx.eps)
        t = y.abs().to(acc) * inv
        f = t.sqrt() if b == 2.0 else t.pow((b - 1.0) / b)
        dy = b * f * dz.to(acc) + ((1.0 - b) / 2.0) * inv.square() * y.to(acc) * ds.to(acc)
        return dy.to(y.dtype)


def _sum_squares(x: torch.Tensor, dim: int) -> torch.Tensor:
    if torch.compiler.is_compiling():  # inductor fuses the formula; Dynamo cannot trace custom jvp
        return x.to(_acc_dtype(x.dtype)).square().sum(dim, keepdim=True)
    return SumSquares.apply(x, dim)


def _scale(z: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float) -> torch.Tensor:
    if torch.compiler.is_compiling():  # autograd of the formula; the partitioner picks what to save
        return _scale_forward_torch(z, s, b, eps)
    return BcosScale.apply(z, s, b, dim, eps)


def box_sum(sq: torch.Tensor, kernel_size: Tuple[int, int], stride: Tuple[int, int],
            padding: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """Sum of a (N, 1, H, W) map over every conv window -> (N, 1, H', W'), zero padding."""
    kh, kw = kernel_size
    ph, pw = padding
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
        return sq[:, :, :: stride[0], :: stride[1]]
    if dilation == (1, 1) and ph <= kh // 2 and pw <= kw // 2:
        return F.avg_pool2d(sq, (kh, kw), stride, (ph, pw), count_include_pad=True, divisor_override=1)
    ones = sq.new_ones(1, 1, kh, kw)
    return F.conv2d(sq, ones, None, stride, (ph, pw), dilation)


def conv_scale(x: torch.Tensor, z: torch.Tensor, kernel_size: Any, stride: Any, padding: Any,
               dilation: Any, b: float, eps: float = NORM_EPS) -> torch.Tensor:
    """B-cos scale of a groups=1 conv: x (N, C_in, H, W) its input, z (N, C_out, H', W') = conv(x).

    Returns z * (|z| / ||x_patch||)^(B-1) in z's dtype and layout.
    """
    sq = _sum_squares(x, 1)  # (N, 1, H, W) fp32
    s = box_sum(sq, as_pair(kernel_size), as_pair(stride), as_pair(padding), as_pair(dilation))
    return _scale(z, s, float(b), 1, eps)


def linear_scale(x: torch.Tensor, z: torch.Tensor, b: float, eps: float = NORM_EPS) -> torch.Tensor:
    """B-cos scale of a linear layer: x (..., D_in), z (..., D_out) -> z * (|z| / ||x||)^(B-1)."""
    s = _sum_squares(x, -1)  # (..., 1) fp32
    return _scale(z, s, float(b), -1, eps)
