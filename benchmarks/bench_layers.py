"""Layer-level benchmark and GPU check of the fast B-cos path (bcos_clip.nn.fused).

For RN50 / ViT-B-16 layer shapes (batch 128, 224 px, bf16 autocast, channels_last convs) it times
forward + backward (grads of input and weight) of:
  plain      the plain conv / linear alone (the floor: what the B-cos scale adds is the difference)
  reference  the official-style formula (bcos_clip.apps.bench.reference)
  formula    bcos_clip's reference formula (fast path off)
  fast-torch the fast path's autograd Functions with torch ops (Triton off)
  fast       the fast path (Triton kernels on CUDA)
and the B-cos scale's forward kernel alone against a plain copy of the same tensor (memory bandwidth:
the kernel reads z and writes y, as a copy does). On CUDA it first checks the Triton kernels against the
torch formulas (fp32 and bf16, NCHW, channels_last, rows); `--check-only` stops there (exit code 1 on a
mismatch). Ratios are measured in one run.

Usage: python benchmarks/bench_layers.py [--quick] [--device cuda] [--output layers.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from bcos_clip import nn as bnn
from bcos_clip.apps.bench.reference import to_reference
from bcos_clip.apps.bench.timing import measure
from bcos_clip.nn import fused

# name, kind, (in, out, kernel, stride, padding) or (in, out), spatial size / rows per image
FULL_SHAPES = [
    ("rn50.layer1.conv2 3x3 64->64 @56", "conv", (64, 64, 3, 1, 1), 56),
    ("rn50.layer1.conv1 1x1 256->64 @56", "conv", (256, 64, 1, 1, 0), 56),
    ("rn50.layer1.conv3 1x1 64->256 @56", "conv", (64, 256, 1, 1, 0), 56),
    ("rn50.layer4.conv2 3x3 512->512 @7", "conv", (512, 512, 3, 1, 1), 7),
    ("vit-b16.mlp.c_fc 768->3072 x197", "linear", (768, 3072), 197),
    ("vit-b16.mlp.c_proj 3072->768 x197", "linear", (3072, 768), 197),
]
QUICK_SHAPES = [
    ("conv 3x3 16->16 @16", "conv", (16, 16, 3, 1, 1), 16),
    ("conv 1x1 32->16 @16", "conv", (32, 16, 1, 1, 0), 16),
    ("linear 64->128 x17", "linear", (64, 128), 17),
]


def build(kind: str, dims: Tuple[int, ...], device: torch.device) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """(plain layer, B-cos layer with the same weight)."""
    if kind == "conv":
        cin, cout, k, s, p = dims
        plain = torch.nn.Conv2d(cin, cout, k, s, p, bias=False)
        bcos = bnn.BcosConv2d.from_conv(plain, b=2.0)
        fmt = torch.channels_last
    else:
        plain = torch.nn.Linear(dims[0], dims[1], bias=False)
        bcos = bnn.BcosLinear.from_linear(plain, b=2.0)
        fmt = torch.contiguous_format
    return plain.to(device, memory_format=fmt), bcos.to(device, memory_format=fmt)


def make_input(kind: str, dims: Tuple[int, ...], size: int, batch: int, device: torch.device) -> torch.Tensor:
    if kind == "conv":
        x = torch.randn(batch, dims[0], size, size, device=device).to(memory_format=torch.channels_last)
    else:
        x = torch.randn(batch, size, dims[0], device=device)
    return x.relu() if kind == "conv" else x  # conv inputs follow a ReLU in RN50


def step_fn(layer: Callable, x: torch.Tensor, params: List[torch.nn.Parameter], device: torch.device,
            precision: str, ctx: Callable) -> Callable[[], None]:
    x = x.detach().requires_grad_(True)

    def step() -> None:
        with ctx(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = layer(x)
        y.backward(torch.ones_like(y))
        x.grad = None
        for p in params:
            p.grad = None

    return step


def variants(plain: torch.nn.Module, bcos: torch.nn.Module) -> Dict[str, Tuple[Callable, Callable]]:
    ref = to_reference(torch.nn.Sequential(bcos))[0]
    return {
        "plain": (plain, lambda: fused.fast_path(True)),
        "reference": (ref, lambda: fused.fast_path(True)),
        "formula": (bcos, lambda: fused.fast_path(False)),
        "fast-torch": (bcos, lambda: fused.fast_path(True, triton=False)),
        "fast": (bcos, lambda: fused.fast_path(True, triton=True)),
    }


def bandwidth_row(kind: str, dims: Tuple[int, ...], size: int, batch: int, device: torch.device,
                  iters: int) -> Dict[str, Any]:
    """The scale's forward alone vs a copy of z (both read |z| bytes and write |z| bytes)."""
    out_ch = dims[1]
    if kind == "conv":
        z = torch.randn(batch, out_ch, size, size, device=device, dtype=torch.bfloat16)
        z = z.to(memory_format=torch.channels_last)
        s = torch.rand(batch, 1, size, size, device=device) + 0.5
        dim = 1
    else:
        z = torch.randn(batch, size, out_ch, device=device, dtype=torch.bfloat16)
        s = torch.rand(batch, size, 1, device=device) + 0.5
        dim = -1
    gbytes = 2 * z.numel() * z.element_size() / 1e9
    scale = measure(lambda: fused.BcosScale.apply(z, s, 2.0, dim, 1e-6), device, iters, 3)["ms"]
    copy = measure(lambda: z.clone(), device, iters, 3)["ms"]
    return {"scale_fwd_ms": scale, "copy_ms": copy, "scale_fwd_GBps": gbytes / scale * 1e3,
            "copy_GBps": gbytes / copy * 1e3}


def check_triton(device: torch.device) -> Dict[str, float]:
    """Max relative error of the Triton kernels vs the torch formulas, per case."""
    from bcos_clip.nn import fused_triton as ft

    torch.manual_seed(0)
    errs: Dict[str, float] = {}

    def rel(a: torch.Tensor, r: torch.Tensor) -> float:
        return float((a.float() - r.float()).abs().max() / r.float().abs().max().clamp_min(1e-12))

    cases = [("nchw", (8, 96, 13, 17), 1, torch.contiguous_format), ("nhwc", (8, 96, 13, 17), 1, torch.channels_last),
             ("rows", (4, 197, 768), -1, torch.contiguous_format)]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for name, shape, dim, fmt in cases:
            x = torch.randn(*shape, device=device, dtype=dtype)
            z = torch.randn(*shape, device=device, dtype=dtype)
            if fmt is torch.channels_last:
                x, z = x.to(memory_format=fmt), z.to(memory_format=fmt)
            s = ft.sumsq(x, dim)
            key = f"{name}/{str(dtype).split('.')[-1]}"
            errs[f"sumsq/{key}"] = rel(s, x.float().square().sum(dim, keepdim=True))
            for b in (2.0, 2.5):
                y = ft.scale_fwd(z, s, b, dim, 1e-6)
                yr = fused._scale_forward_torch(z.float(), s, b, 1e-6)
                errs[f"fwd/b{b}/{key}"] = rel(y, yr)
                g = torch.randn_like(y)
                gz, gs = ft.scale_bwd(g, y, s, b, dim, 1e-6)
                gzr, gsr = fused._scale_backward_torch(g.float(), y.float(), s, b, dim, 1e-6)
                errs[f"bwd_z/b{b}/{key}"] = rel(gz, gzr)
                errs[f"bwd_s/b{b}/{key}"] = rel(gs, gsr)
                gz, gs = ft.scale_bwd(g, z, s, b, dim, 1e-6, from_z=True)  # fp16's saved z
                gzr, gsr = fused._scale_backward_torch(g.float(), z.float(), s, b, dim, 1e-6, from_z=True)
                errs[f"bwd_z_from_z/b{b}/{key}"] = rel(gz, gzr)
                errs[f"bwd_s_from_z/b{b}/{key}"] = rel(gs, gsr)
    errs.update(check_conv_bn_kernels(device, rel))
    return errs


def check_conv_bn_kernels(device: torch.device, rel: Callable) -> Dict[str, float]:
    """nn.fused_conv_bn's kernels (the scale's statistics, bn_finalize, the shifted backward) against
    nn.fused_torch, and a B-cos conv -> BatchNorm pair's step with and without "conv_bn" (bf16 autocast)."""
    from bcos_clip import nn as bnn
    from bcos_clip.nn import fused_triton as ft
    from bcos_clip.nn.fused_torch import TorchKernels

    tk, errs = TorchKernels(), {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        z = (torch.randn(8, 96, 13, 17, device=device) * 2 + 0.5).to(dtype).to(memory_format=torch.channels_last)
        s = ft.sumsq(torch.randn(8, 7, 13, 17, device=device), 1)
        key = str(dtype).split(".")[-1]
        y, part = ft.scale_fwd_stats(z, s, 2.0, 1e-6)
        yr, partr = tk.scale_fwd_stats(z, s, 2.0, 1e-6)
        w, rv = torch.rand(96, device=device) + 0.5, torch.rand(96, device=device) + 0.5
        rv2, total = rv.clone(), y.numel() // 96
        vec, vecr = ft.bn_finalize(part, w, rv, 0.1, 1e-5, total), tk.bn_finalize(partr, w, rv2, 0.1, 1e-5, total)
        errs.update({f"stats_fwd/{key}": rel(y, yr), f"bn_finalize/{key}": rel(vec, vecr),
                     f"bn_running_var/{key}": rel(rv, rv2)})
        g = torch.randn_like(y)
        shift = (torch.randn(96, device=device), torch.randn(96, device=device), vecr[2].contiguous(),
                 vecr[0].contiguous(), 1.0 / total)
        for (name, a), r in zip((("gz", ft.scale_bwd(g, yr, s, 2.0, 1, 1e-6, shift=shift)[0]),
                                 ("gs", ft.scale_bwd(g, yr, s, 2.0, 1, 1e-6, shift=shift)[1])),
                                tk.scale_bwd(g, yr, s, 2.0, 1, 1e-6, shift=shift)):
            errs[f"bwd_shift_{name}/{key}"] = rel(a, r)
    torch.manual_seed(0)
    pair = torch.nn.Sequential(bnn.BcosConv2d(64, 96, 3, padding=1), bnn.UncenteredBatchNorm2d(96)).to(device)
    x = torch.randn(8, 64, 28, 28, device=device).to(memory_format=torch.channels_last)
    outs = []
    for feats in (None, [f for f in fused.FEATURES if f != "conv_bn"]):
        xi = x.clone().requires_grad_(True)
        with fused.fast_path(True, features=feats), torch.autocast(device.type, dtype=torch.bfloat16):
            y = pair(xi)
        outs.append([y] + list(torch.autograd.grad(y.float().square().sum(), [xi] + list(pair.parameters()))))
    for i, (a, r) in enumerate(zip(*outs)):
        errs[f"conv_bn_pair/bfloat16/{i}"] = rel(a, r)
    return errs


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = "bf16" if device.type == "cuda" else "fp32"
    quick = args.quick
    shapes, batch, iters = (QUICK_SHAPES, 4, 3) if quick else (FULL_SHAPES, 128, 20)
    result: Dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "precision": precision, "batch": batch, "rows": []}
    if device.type == "cuda":
        errs = check_triton(device)
        result["triton_check"] = errs
        result["triton_ok"] = all(v < (2e-2 if "bfloat16" in k else 5e-3 if "float16" in k else 1e-4)
                                  for k, v in errs.items())
        print(f"triton check: {'OK' if result['triton_ok'] else 'MISMATCH'} (worst {max(errs.values()):.2e})")
    if args.check_only:  # nothing to time; on a CPU nothing to check either (no Triton on CPU)
        result.setdefault("triton_check", "no CUDA device: the kernels are checked by the interpreter test")
        return result
    for name, kind, dims, size in shapes:
        plain, bcos = build(kind, dims, device)
        x = make_input(kind, dims, size, batch, device)
        row: Dict[str, Any] = {"layer": name}
        for vname, (layer, ctx) in variants(plain, bcos).items():
            params = list(layer.parameters())
            row[f"{vname}_ms"] = measure(step_fn(layer, x, params, device, precision, ctx), device, iters, 3)["ms"]
        row["fast_x_plain"] = row["fast_ms"] / row["plain_ms"]
        row["reference_over_fast"] = row["reference_ms"] / row["fast_ms"]
        row["formula_over_fast"] = row["formula_ms"] / row["fast_ms"]
        if device.type == "cuda":
            row.update(bandwidth_row(kind, dims, size, batch, device, iters))
        result["rows"].append(row)
        print(" | ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{v}" for k, v in row.items()), flush=True)
    return result


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    p.add_argument("--device", default="auto")
    p.add_argument("--output", "--out", dest="output", default=None, help="JSON file to write")
    p.add_argument("--check-only", action="store_true", help="CUDA: only check the Triton kernels")
    args = p.parse_args(argv)
    result = run(args)
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0 if result.get("triton_ok", True) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
