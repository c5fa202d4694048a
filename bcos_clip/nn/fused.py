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
formula; `set_triton(False)` keeps the Functions but uses the torch ops on CUDA too. The fast paths of
the other layer kinds are named FEATURES (`feature(name)` says whether one is on; `fast_path(...,
features=...)` selects a subset, e.g. to reproduce the code of an older measurement):
- "batchnorm": training-mode uncentered BatchNorm as one autograd Function (nn.norms);
- "layernorm": the centred, bias-free LayerNorm through the native layer_norm kernel (nn.norms);
- "activation": GELU through the native gelu kernel, QuickGELU as a Function saving x only;
- "layer": B-cos conv / linear layers as one autograd Function each (nn.fused_layers);
- "conv_bn": with the kernels (Triton on CUDA), a B-cos conv and the training-mode uncentered BatchNorm
  after it share kernels: the scale kernel writes the BatchNorm's statistics, the scale's backward
  kernel adds the BatchNorm's per-channel gradient term (nn.fused_conv_bn).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from bcos_clip.nn.functional import NORM_EPS, as_pair

FEATURES = ("batchnorm", "layernorm", "activation", "layer", "conv_bn")
_STATE: Dict[str, Any] = {"fast": True, "triton": True, "features": frozenset(FEATURES)}
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def set_fast_path(enabled: bool) -> None:
    """Globally select the fast path (True, default) or the reference formula (False)."""
    _STATE["fast"] = bool(enabled)


def fast_path_enabled() -> bool:
    return _STATE["fast"]


def set_triton(enabled: bool) -> None:
    """Use Triton kernels for the fast path on CUDA (default True, when Triton is installed)."""
    _STATE["triton"] = bool(enabled)


def enabled_features() -> Tuple[str, ...]:
    """The fast-path features on now (none when the fast path is off)."""
    return tuple(sorted(_STATE["features"])) if _STATE["fast"] else ()


def feature(name: str) -> bool:
    """Whether the fast path of layer kind `name` (one of FEATURES) is on now."""
    return _STATE["fast"] and name in _STATE["features"]


@contextlib.contextmanager
def fast_path(enabled: bool = True, triton: Optional[bool] = None,
              features: Optional[Iterable[str]] = None) -> Iterator[None]:
    """Temporarily select the fast path (and optionally Triton and the subset of FEATURES on);
    restored on exit."""
    before = dict(_STATE)
    try:
        set_fast_path(enabled)
        if triton is not None:
            set_triton(triton)
        if features is not None:
            chosen = frozenset(features)
            unknown = sorted(chosen - set(FEATURES))
            if unknown:
                raise ValueError(f"fast_path: unknown features {unknown}; known: {', '.join(FEATURES)}")
            _STATE["features"] = chosen
        yield
    finally:
        _STATE.update(before)


def applies(module: Any) -> bool:
    """Whether `module` (a BcosConv2d / BcosLinear) may take the fast path now: enabled globally and
    on the module, and no dynamic mode (detach / record / replay) active on it."""
    return (_STATE["fast"] and getattr(module, "fast", True) and module._dyn_mode is None
            and not module.detach_dynamic)


def plain_tensor(t: torch.Tensor) -> bool:
    """False for functorch-wrapped tensors (vmap / grad transforms) and under torch.compile."""
    if torch.compiler.is_compiling():
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(t)


@functools.lru_cache(maxsize=None)
def _triton_kernels() -> Any:
    """bcos_clip.nn.fused_triton if Triton imports, else None (imported on the first CUDA call)."""
    from bcos_clip.nn import fused_triton

    return fused_triton if fused_triton.available() else None


_STAND_IN: Dict[str, Any] = {"kernels": None}


def _kernels() -> Any:
    return _STAND_IN["kernels"] or _triton_kernels()


@contextlib.contextmanager
def kernel_stand_in(kernels: Any) -> Iterator[None]:
    """Route the kernel calls to `kernels` (an object with fused_triton's sumsq / scale_fwd / scale_bwd /
    view3) on every device, as on CUDA with Triton: the cost model counts each call as one kernel."""
    before = _STAND_IN["kernels"]
    _STAND_IN["kernels"] = kernels
    try:
        yield
    finally:
        _STAND_IN["kernels"] = before


def _use_triton(*tensors: torch.Tensor) -> bool:
    if torch.compiler.is_compiling() or not _STATE["triton"]:
        return False
    on_device = _STAND_IN["kernels"] is not None or all(t.is_cuda for t in tensors)
    if not on_device or _kernels() is None:
        return False
    any_dtype = _STAND_IN["kernels"] is not None  # a stand-in (nn.fused_torch) takes float64 too
    return all((any_dtype or t.dtype in _TRITON_DTYPES) and plain_tensor(t) for t in tensors)


def kernels_for(*tensors: torch.Tensor) -> Any:
    """The kernels (fused_triton, or a stand-in) the fast path uses for these tensors now, else None."""
    return _kernels() if _use_triton(*tensors) else None


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


def sumsq(x: torch.Tensor, dim: int) -> torch.Tensor:
    """sum over `dim` of x^2, keepdim, accumulated and returned in >= fp32 (no autograd)."""
    if _use_triton(x):
        return _kernels().sumsq(_dense(x, dim), dim)
    return x.to(_acc_dtype(x.dtype)).square().sum(dim, keepdim=True)


def saves_z(dtype: torch.dtype) -> bool:
    """Whether the scale keeps its input z for backward instead of its output y: in fp16, y = z f can
    underflow where z and f do not (z = 1e-4, ||x|| = 10: y = 1e-9 < fp16's smallest subnormal), and
    recomputing f from y would zero the gradient; bf16 and fp32 have fp32's exponent range."""
    return dtype == torch.float16


def scale_forward(z: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float) -> torch.Tensor:
    """y = z * (|z| / sqrt(s + eps))^(b-1) in z's dtype and layout (no autograd)."""
    if _use_triton(z, s):
        return _kernels().scale_fwd(_dense_out(z), s.contiguous(), b, dim, eps)
    return scale_forward_torch(z, s, b, eps)


def scale_forward_torch(z: torch.Tensor, s: torch.Tensor, b: float, eps: float) -> torch.Tensor:
    """`scale_forward` in torch ops (any device and dtype)."""
    return _scale_forward_torch(z, s, b, eps)


def scale_forward_stats(z: torch.Tensor, s: torch.Tensor, b: float, eps: float) -> Tuple[torch.Tensor, Any]:
    """scale_forward of a conv output (dim 1) and the partial per-channel statistics of y, in one kernel
    (fused_triton.scale_fwd_stats); only where `kernels_for(z, s)` gives kernels."""
    return _kernels().scale_fwd_stats(_dense_out(z), s.contiguous(), b, eps)


def scale_backward(g: torch.Tensor, t: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float,
                   from_z: bool, shift: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(grad_z, grad_s) from the saved t: the output y, or the input z when `from_z` (see saves_z).
    `shift` (gsum, gw, rmean, sbn, 1/M; nn.fused_conv_bn) first adds (gsum + gw rmean) sbn / M to g per
    channel (dim 1). Triton on CUDA unless a graph of the backward is being built (double backward)."""
    if _use_triton(g, t, s) and not torch.is_grad_enabled():
        gz, gs = _kernels().scale_bwd(_dense(g, dim), _dense_out(t), s.contiguous(), b, dim, eps, from_z,
                                      shift=shift)
        return gz, gs.to(s.dtype)
    return scale_backward_torch(g, t, s, b, dim, eps, from_z, shift)


def scale_backward_torch(g: torch.Tensor, t: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float,
                         from_z: bool = False, shift: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """`scale_backward` in torch ops (any device and dtype)."""
    if shift is None:
        return _scale_backward_torch(g, t, s, b, dim, eps, from_z)
    gsum, gw, rmean, sbn, inv_m = shift
    shifted = g.to(_acc_dtype(g.dtype)) + ((gsum + gw * rmean) * sbn * inv_m)[None, :, None, None]
    gz, gs = _scale_backward_torch(shifted, t, s, b, dim, eps, from_z)
    return gz.to(g.dtype), gs


class SumSquares(torch.autograd.Function):
    """s = sum over `dim` of x^2 (keepdim), accumulated in >= fp32. Backward: 2 x g (x's dtype)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
        return sumsq(x, dim)

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


def _factor_and_output(t: torch.Tensor, inv: torch.Tensor, b: float, from_z: bool
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(f, y) in >= fp32 from the saved t (y, or z when from_z) and inv = 1/sqrt(s + eps).

    From y: f = (|y| inv)^((b-1)/b) (for b = 2: sqrt(|y| inv)); from z: f = (|z| inv)^(b-1), y = z f.
    """
    ta = t.to(_acc_dtype(t.dtype))
    r = ta.abs() * inv
    if from_z:
        f = r if b == 2.0 else r.pow(b - 1.0)
        return f, ta * f
    return (r.sqrt() if b == 2.0 else r.pow((b - 1.0) / b)), ta


def _scale_backward_torch(g: torch.Tensor, t: torch.Tensor, s: torch.Tensor, b: float, dim: int,
                          eps: float, from_z: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    acc = _acc_dtype(t.dtype)
    inv = torch.rsqrt(s.to(acc) + eps)
    f, y = _factor_and_output(t, inv, b, from_z)
    ga = g.to(acc)
    gz = (b * ga * f).to(g.dtype)
    gs = ((1.0 - b) / 2.0) * inv.square() * (ga * y).sum(dim, keepdim=True)
    return gz, gs.to(s.dtype)


class BcosScale(torch.autograd.Function):
    """y = z * (|z| / sqrt(s + eps))^(b-1); s broadcasts over `dim`. Saves y (z in fp16) and s only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float) -> torch.Tensor:
        return scale_forward(z, s, b, dim, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
        z, s, b, dim, eps = inputs
        ctx.from_z = saves_z(z.dtype)
        kept = z if ctx.from_z else output
        ctx.save_for_backward(kept, s)
        ctx.save_for_forward(kept, s)
        ctx.b, ctx.dim, ctx.eps = b, dim, eps

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        t, s = ctx.saved_tensors
        gz, gs = scale_backward(g, t, s, ctx.b, ctx.dim, ctx.eps, ctx.from_z)
        return gz, gs, None, None, None

    @staticmethod
    def jvp(ctx: Any, dz: torch.Tensor, ds: torch.Tensor, *_: Any) -> torch.Tensor:
        """dy = B f dz + (1-B)/2 inv^2 y ds (forward-mode AD, torch ops)."""
        t, s = ctx.saved_tensors
        b = ctx.b
        acc = _acc_dtype(t.dtype)
        inv = torch.rsqrt(s.to(acc) + ctx.eps)
        f, y = _factor_and_output(t, inv, b, ctx.from_z)
        dy = b * f * dz.to(acc) + ((1.0 - b) / 2.0) * inv.square() * y * ds.to(acc)
        return dy.to(t.dtype)


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
