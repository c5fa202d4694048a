"""The conv -> uncentered BatchNorm pair on shared kernels (nn.fused_conv_bn, fast-path feature "conv_bn")
against the formulas: float64 forward, gradients and running variance, gradcheck, bf16 channels_last
against the unfused fast path, and the fallbacks. The kernel path runs on nn.fused_torch's twin here;
the Triton kernels are checked against that twin in tests/test_perf_triton.py."""
import pytest
import torch
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.nn import fused, fused_conv_bn
from bcos_clip.nn.fused_torch import TorchKernels


def _pair(dtype=torch.float64, **conv):
    torch.manual_seed(0)
    cfg = dict(in_channels=5, out_channels=6, kernel_size=3, padding=1, **conv)
    pair = nn.Sequential(bnn.BcosConv2d(**cfg), bnn.UncenteredBatchNorm2d(6)).to(dtype).train()
    with torch.no_grad():
        pair[1].weight.uniform_(0.5, 1.5)
    return pair


def _run(pair, x, fast, kernels=True, features=None):
    """Output, grads of x and every parameter, the running variance after the step."""
    pair = pair.__class__(*[m for m in pair])  # same modules
    for p in pair.parameters():
        p.grad = None
    rv = pair[1].running_var.clone()
    xi = x.detach().clone().requires_grad_(True)
    stand_in = fused.kernel_stand_in(TorchKernels()) if kernels else fused.fast_path(fast)
    with stand_in, fused.fast_path(fast, features=features):
        y = pair(xi)
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(y, [xi] + list(pair.parameters()), g)
    new_rv = pair[1].running_var.clone()
    pair[1].running_var.copy_(rv)
    return [y.detach()] + list(grads) + [new_rv]


@pytest.mark.parametrize("conv", [dict(), dict(stride=2), dict(bias=True)])
def test_conv_bn_equals_the_formulas_in_float64(conv, monkeypatch):
    pair = _pair(**conv)
    x = torch.randn(3, 5, 7, 6, dtype=torch.float64) * 2 + 0.5
    calls = []
    real = fused_conv_bn.BcosConvBNFn.apply
    monkeypatch.setattr(fused_conv_bn.BcosConvBNFn, "apply", lambda *a: calls.append(1) or real(*a))
    fast = _run(pair, x, True)
    assert calls, "the joint conv-BatchNorm Function did not run"
    ref = _run(pair, x, False, kernels=False)
    for a, r in zip(fast, ref):
        assert torch.allclose(a, r, rtol=1e-10, atol=1e-12), (a - r).abs().max()


def test_conv_bn_gradcheck_float64():
    pair = _pair(bias=True)
    x = torch.randn(2, 5, 4, 5, dtype=torch.float64, requires_grad=True)
    with fused.kernel_stand_in(TorchKernels()), fused.fast_path(True):
        assert torch.autograd.gradcheck(lambda t: pair(t), (x,))
        y = pair(x)
    assert type(y.grad_fn).__name__ == "BcosConvBNFnBackward"


def test_conv_bn_bf16_channels_last_equals_the_unfused_fast_path():
    pair = _pair(dtype=torch.float32)
    x = (torch.randn(4, 5, 8, 8) * 2 + 1).contiguous(memory_format=torch.channels_last)
    unfused = [f for f in fused.FEATURES if f != "conv_bn"]
    out = {}
    for feats in (None, unfused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out[feats is None] = _run(pair, x, True, features=feats)
    assert out[True][0].dtype == torch.bfloat16
    for a, r in zip(out[True], out[False]):  # bf16 rounding: the fused path rounds g once less
        a, r = a.float(), r.float()
        assert torch.allclose(a, r, rtol=2e-2, atol=2e-2 * r.abs().max().item()), (a - r).abs().max()


def test_conv_bn_falls_back_without_kernels_or_after_in_place_change():
    pair = _pair()
    x = torch.randn(2, 5, 4, 5, dtype=torch.float64, requires_grad=True)
    with fused.fast_path(True):  # no kernels on a CPU: the separate Functions
        assert type(pair(x).grad_fn).__name__ != "BcosConvBNFnBackward"
    with fused.kernel_stand_in(TorchKernels()), fused.fast_path(True):
        y = pair[0](x)
        y.mul_(2.0)  # y changed after its statistics were taken
        assert fused_conv_bn.pending_stats(y) is None
        out = pair[1](y)
        assert type(out.grad_fn).__name__ != "BcosConvBNFnBackward"
