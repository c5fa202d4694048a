"""Triton kernels of the fast B-cos path (CUDA only; optional: `available()` says whether they load).

Every tensor is seen as a 3-D view (N, C, P): C is the axis reduced by the patch norm (conv channels,
linear features) and P the flattened positions (H*W, or the rows of a linear layer's input). Strides
are passed, so NCHW, channels_last and (rows, features) layouts all run without copies. The per-
position map s (sum of squares) is a contiguous (N, P) fp32 tensor. Each program owns BLOCK_P
positions of one n and walks all C, so the reduction over C needs no atomics.

- `sumsq(x)`:      s[n, p] = sum_c x[n, c, p]^2                              (one read of x)
- `scale_fwd`:     y = z * (|z| * inv)^(B-1), inv = 1/sqrt(s + eps)         (read z, write y)
- `scale_bwd`:     f = (|y| * inv)^((B-1)/B); gz = B * g * f;
                   gs = (1-B)/2 * inv^2 * sum_c g*y                         (read g, y; write gz)
                   from_z (fp16, see nn.fused.saves_z): the saved tensor is z; f = (|z| * inv)^(B-1),
                   y = z * f in fp32 (the same maths as nn.fused._scale_backward_torch)
                   shift (nn.fused_conv_bn): g + (gsum + gw rmean) sbn / M per channel first, the
                   per-channel term of the uncentered BatchNorm backward that follows the layer
- `scale_fwd_stats`: scale_fwd (conv layout) that also writes, per program and channel, the count,
                   mean and sum of squared deviations of the stored (rounded) y: Chan's partials
- `bn_finalize`:   the partials -> batch mean and variance per channel (Chan's combination), the
                   running variance's update, and (gamma r, r, r mean), r = 1/sqrt(var + eps)
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

try:  # pragma: no cover - depends on the installation
    import triton
    import triton.language as tl

    _IMPORT_ERROR = None
except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
    triton, tl, _IMPORT_ERROR = None, None, exc

View = Tuple[int, int, int, int, int, int]  # N, C, P, sN, sC, sP
Shift = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]  # gsum, gw, rmean, sbn, 1/M


def available() -> bool:
    return triton is not None


def view3(t: torch.Tensor, dim: int) -> View:
    """(N, C, P) sizes and strides of t for reduction axis `dim` (1 for (N,C,H,W); -1 for (..., D)).

    Raises ValueError when the positions cannot be flattened into one stride (caller copies first).
    """
    if dim == 1 and t.dim() == 4:
        n, c, h, w = t.shape
        sn, sc, sh, sw = t.stride()
        if h > 1 and w > 1 and sh != w * sw:
            raise ValueError("positions not flattenable")
        sp = sw if w > 1 else sh
        return n, c, h * w, sn, sc, sp
    if dim in (-1, t.dim() - 1):
        d = t.shape[-1]
        lead = [(size, st) for size, st in zip(t.shape[:-1], t.stride()[:-1]) if size > 1]
        for (_, st_i), (size_j, st_j) in zip(lead, lead[1:]):
            if st_i != st_j * size_j:
                raise ValueError("rows not flattenable")
        sp = lead[-1][1] if lead else d
        return 1, d, t.numel() // max(d, 1), 0, t.stride(-1), sp
    raise ValueError(f"unsupported reduction dim {dim} for a {t.dim()}-D tensor")


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _blocks(c: int, sc: int) -> Tuple[int, int, int]:
    """(BLOCK_P, BLOCK_C, num_warps): channels-fast tiles when C is contiguous, positions-fast else."""
    if sc == 1:
        bc = min(_pow2(max(c, 1)), 128)
        return max(4096 // bc, 8), bc, 4
    return 256, min(_pow2(max(c, 1)), 16), 4


def stats_rows(z: torch.Tensor) -> int:
    """Rows of the partial statistics `scale_fwd_stats` writes for a conv output z (N, C, H, W)."""
    n, c, p, _, sc, _ = view3(z, 1)
    return n * -(-p // _blocks(c, sc)[0])


if triton is not None:

    @triton.jit
    def _sumsq_kernel(x_ptr, s_ptr, C, P, sN, sC, sP,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        pb = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        offs_p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        base = x_ptr + n * sN + offs_p.to(tl.int64)[:, None] * sP
        acc = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            m = mask_p[:, None] & (offs_c < C)[None, :]
            x = tl.load(base + offs_c[None, :] * sC, mask=m, other=0.0).to(tl.float32)
            acc += tl.sum(x * x, axis=1)
        tl.store(s_ptr + n * P + offs_p, acc, mask=mask_p)

    @triton.jit
    def _scale_fwd_kernel(z_ptr, s_ptr, y_ptr, mean_ptr, m2_ptr, cnt_ptr, C, P, sN, sC, sP, eps, bm1,
                          B_IS_2: tl.constexpr, STATS: tl.constexpr, BLOCK_P: tl.constexpr,
                          BLOCK_C: tl.constexpr):
        pb = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        row = n * tl.num_programs(0) + pb
        offs_p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        cnt = tl.sum(mask_p.to(tl.float32), axis=0)
        s = tl.load(s_ptr + n * P + offs_p, mask=mask_p, other=1.0).to(tl.float32)
        inv = (1.0 / tl.sqrt(s + eps))[:, None]
        off = n * sN + offs_p.to(tl.int64)[:, None] * sP
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            m = mask_p[:, None] & (offs_c < C)[None, :]
            o = off + offs_c[None, :] * sC
            z = tl.load(z_ptr + o, mask=m, other=0.0).to(tl.float32)
            f = tl.abs(z) * inv
            if not B_IS_2:
                f = tl.exp2(bm1 * tl.log2(f))
            y = (z * f).to(y_ptr.dtype.element_ty)
            tl.store(y_ptr + o, y, mask=m)
            if STATS:  # Chan's partials of the stored (rounded) y over this program's positions
                yf = tl.where(m, y.to(tl.float32), 0.0)
                mean = tl.sum(yf, axis=0) / cnt
                d = tl.where(m, yf - mean[None, :], 0.0)
                mask_c = offs_c < C
                tl.store(mean_ptr + row * C + offs_c, mean, mask=mask_c)
                tl.store(m2_ptr + row * C + offs_c, tl.sum(d * d, axis=0), mask=mask_c)
        if STATS:
            tl.store(cnt_ptr + row, cnt)

    @triton.jit
    def _bn_finalize_kernel(mean_ptr, m2_ptr, cnt_ptr, w_ptr, rv_ptr, out_ptr, R, C, total, momentum, unbias,
                            eps, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            m = (offs_r < R)[:, None] & mask_c[None, :]
            cnt = tl.load(cnt_ptr + offs_r, mask=offs_r < R, other=0.0)
            mu = tl.load(mean_ptr + offs_r[:, None] * C + offs_c[None, :], mask=m, other=0.0)
            acc += tl.sum(cnt[:, None] * mu, axis=0)
        mean = acc / total
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            m = (offs_r < R)[:, None] & mask_c[None, :]
            cnt = tl.load(cnt_ptr + offs_r, mask=offs_r < R, other=0.0)
            o = offs_r[:, None] * C + offs_c[None, :]
            dm = tl.load(mean_ptr + o, mask=m, other=0.0) - mean[None, :]
            acc += tl.sum(tl.load(m2_ptr + o, mask=m, other=0.0) + cnt[:, None] * dm * dm, axis=0)
        var = acc / total
        rv = tl.load(rv_ptr + offs_c, mask=mask_c, other=1.0)
        tl.store(rv_ptr + offs_c, (1.0 - momentum) * rv + momentum * unbias * var, mask=mask_c)
        r = 1.0 / tl.sqrt(var + eps)
        tl.store(out_ptr + offs_c, tl.load(w_ptr + offs_c, mask=mask_c, other=0.0) * r, mask=mask_c)
        tl.store(out_ptr + C + offs_c, r, mask=mask_c)
        tl.store(out_ptr + 2 * C + offs_c, r * mean, mask=mask_c)

    @triton.jit
    def _scale_bwd_kernel(g_ptr, y_ptr, s_ptr, gz_ptr, gs_ptr, C, P,
                          gN, gC, gP, yN, yC, yP, eps, b, expo, gs_coef,
                          gsum_ptr, gw_ptr, rmean_ptr, sbn_ptr, inv_m,
                          B_IS_2: tl.constexpr, FROM_Z: tl.constexpr, SHIFT: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        pb = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        offs_p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        p64 = offs_p.to(tl.int64)[:, None]
        s = tl.load(s_ptr + n * P + offs_p, mask=mask_p, other=1.0).to(tl.float32)
        inv1 = 1.0 / tl.sqrt(s + eps)
        inv = inv1[:, None]
        acc = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            m = mask_p[:, None] & (offs_c < C)[None, :]
            oy = n * yN + p64 * yP + offs_c[None, :] * yC
            g = tl.load(g_ptr + n * gN + p64 * gP + offs_c[None, :] * gC, mask=m, other=0.0).to(tl.float32)
            if SHIFT:  # the uncentered BatchNorm's per-channel term (nn.fused_conv_bn)
                mc = offs_c < C
                sh = (tl.load(gsum_ptr + offs_c, mask=mc, other=0.0)
                      + tl.load(gw_ptr + offs_c, mask=mc, other=0.0) * tl.load(rmean_ptr + offs_c, mask=mc, other=0.0)
                      ) * tl.load(sbn_ptr + offs_c, mask=mc, other=0.0) * inv_m
                g = tl.where(m, g + sh[None, :], 0.0)
            y = tl.load(y_ptr + oy, mask=m, other=0.0).to(tl.float32)
            t = tl.abs(y) * inv
            if FROM_Z:  # y_ptr holds z; expo is B-1
                if B_IS_2:
                    f = t
                else:
                    f = tl.exp2(expo * tl.log2(t))
                y = y * f
            elif B_IS_2:
                f = tl.sqrt(t)
            else:
                f = tl.exp2(expo * tl.log2(t))
            tl.store(gz_ptr + oy, (b * g * f).to(gz_ptr.dtype.element_ty), mask=m)
            acc += tl.sum(g * y, axis=1)
        tl.store(gs_ptr + n * P + offs_p, gs_coef * inv1 * inv1 * acc, mask=mask_p)


def sumsq(x: torch.Tensor, dim: int) -> torch.Tensor:
    """sum over `dim` of x^2 in fp32, keepdim: (N, C, H, W) -> (N, 1, H, W); (..., D) -> (..., 1)."""
    n, c, p, sn, sc, sp = view3(x, dim)
    out_shape = (n, 1) + tuple(x.shape[2:]) if dim == 1 else tuple(x.shape[:-1]) + (1,)
    s = torch.empty(out_shape, device=x.device, dtype=torch.float32)
    bp, bc, nw = _blocks(c, sc)
    _sumsq_kernel[(triton.cdiv(p, bp), n)](x, s, c, p, sn, sc, sp, BLOCK_P=bp, BLOCK_C=bc, num_warps=nw)
    return s


def scale_fwd(z: torch.Tensor, s: torch.Tensor, b: float, dim: int, eps: float) -> torch.Tensor:
    """y = z * (|z| / sqrt(s + eps))^(b-1) in z's dtype and layout; s contiguous fp32 (keepdim)."""
    y = torch.empty_like(z)
    n, c, p, sn, sc, sp = view3(z, dim)
    bp, bc, nw = _blocks(c, sc)
    _scale_fwd_kernel[(triton.cdiv(p, bp), n)](z, s, y, s, s, s, c, p, sn, sc, sp, eps, b - 1.0, B_IS_2=b == 2.0,
                                               STATS=False, BLOCK_P=bp, BLOCK_C=bc, num_warps=nw)
    return y


def scale_bwd(g: torch.Tensor, y: torch.Tensor, s: torch.Tensor, b: float, dim: int,
              eps: float, from_z: bool = False, shift: Optional[Shift] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(grad_z, grad_s) of y = scale_fwd(z, s) from the saved output y, or from the saved input z when
    `from_z` (then `y` is z; see the module docstring); `shift` = (gsum, gw, rmean, sbn, 1/M), four
    contiguous fp32 (C,) vectors and a number, adds (gsum + gw rmean) sbn / M to g per channel."""
    gz = torch.empty_like(y)
    gs = torch.empty_like(s, dtype=torch.float32)
    n, c, p, yn, yc, yp = view3(y, dim)
    _, _, _, gn, gc, gp = view3(g, dim)
    bp, bc, nw = _blocks(c, yc)
    vecs = shift[:4] if shift is not None else (s, s, s, s)  # unread without SHIFT
    _scale_bwd_kernel[(triton.cdiv(p, bp), n)](
        g, y, s, gz, gs, c, p, gn, gc, gp, yn, yc, yp, eps, b, (b - 1.0) if from_z else (b - 1.0) / b,
        (1.0 - b) / 2.0, *vecs, float(shift[4]) if shift is not None else 0.0, B_IS_2=b == 2.0,
        FROM_Z=bool(from_z), SHIFT=shift is not None, BLOCK_P=bp, BLOCK_C=bc, num_warps=nw)
    return gz, gs


def scale_fwd_stats(z: torch.Tensor, s: torch.Tensor, b: float, eps: float
                    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """scale_fwd of a conv output z (N, C, H, W) and Chan's partial statistics of the stored y: per
    row (program) the mean and the sum of squared deviations (rows, C) and the count (rows,), fp32."""
    y = torch.empty_like(z)
    n, c, p, sn, sc, sp = view3(z, 1)
    bp, bc, nw = _blocks(c, sc)
    pbs = triton.cdiv(p, bp)
    mean = torch.empty(n * pbs, c, device=z.device, dtype=torch.float32)
    m2, cnt = torch.empty_like(mean), torch.empty(n * pbs, device=z.device, dtype=torch.float32)
    _scale_fwd_kernel[(pbs, n)](z, s, y, mean, m2, cnt, c, p, sn, sc, sp, eps, b - 1.0, B_IS_2=b == 2.0,
                                STATS=True, BLOCK_P=bp, BLOCK_C=bc, num_warps=nw)
    return y, (mean, m2, cnt)


def bn_finalize(part: Tuple[torch.Tensor, torch.Tensor, torch.Tensor], weight: torch.Tensor,
                running_var: torch.Tensor, momentum: float, eps: float, total: int) -> torch.Tensor:
    """Batch statistics from `scale_fwd_stats`'s partials (total = N*H*W elements per channel): updates
    the fp32 running variance in place (unbiased, momentum) and returns (3, C) fp32: gamma r, r, r mean."""
    mean, m2, cnt = part
    rows, c = mean.shape
    out = torch.empty(3, c, device=mean.device, dtype=torch.float32)
    bc = min(_pow2(c), 128)
    _bn_finalize_kernel[(triton.cdiv(c, bc),)](mean, m2, cnt, weight, running_var, out, rows, c, float(total),
                                               momentum, total / max(total - 1.0, 1.0), eps,
                                               BLOCK_R=32, BLOCK_C=bc, num_warps=4)
    return out
