"""The fast B-cos path (bcos_clip.nn.fused) against the reference formula: float64 forward and
gradients, gradcheck, vmap (batched explanation backwards), dtype under autocast, channels_last."""
import pytest
import torch
import torch.nn.functional as F

from bcos_clip import nn as bnn
from bcos_clip.nn import fused

CONVS = [
    dict(in_channels=5, out_channels=7, kernel_size=1),
    dict(in_channels=5, out_channels=7, kernel_size=3, padding=1),
    dict(in_channels=5, out_channels=7, kernel_size=3, stride=2, padding=1),
    dict(in_channels=5, out_channels=7, kernel_size=1, stride=2),
    dict(in_channels=5, out_channels=7, kernel_size=3, padding=2, dilation=2),
    dict(in_channels=5, out_channels=7, kernel_size=3, padding=2),
]


def formula_conv(x, layer):
    """The B-cos conv written out with plain autograd ops (the slow twin)."""
    z = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation)
    ones = torch.ones(1, layer.in_channels, *layer.kernel_size, dtype=x.dtype)
    norm = (F.conv2d(x.square(), ones, None, layer.stride, layer.padding, layer.dilation) + 1e-6).sqrt()
    return z * (z.abs() / norm) ** (layer.b - 1)


def formula_linear(x, layer):
    z = F.linear(x, layer.weight, layer.bias)
    return z * (z.abs() / (x.square().sum(-1, keepdim=True) + 1e-6).sqrt()) ** (layer.b - 1)


def _grads(fn, x, layer, g):
    x = x.detach().requires_grad_(True)
    params = [p for p in layer.parameters()]
    y = fn(x)
    return [y] + list(torch.autograd.grad(y, [x] + params, g))


@pytest.mark.parametrize("cfg", CONVS)
@pytest.mark.parametrize("b", [2.0, 1.5, 3.0])
def test_fast_conv_equals_formula_float64(cfg, b):
    torch.manual_seed(0)
    layer = bnn.BcosConv2d(**cfg, b=b, bias=b == 3.0).double()
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64)
    g = torch.randn_like(formula_conv(x, layer))
    with fused.fast_path(True):
        fast = _grads(layer, x, layer, g)
    ref = _grads(lambda t: formula_conv(t, layer), x, layer, g)
    for a, r in zip(fast, ref):
        assert torch.allclose(a, r, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("b", [2.0, 2.5])
def test_fast_linear_equals_formula_float64_and_gradcheck(b):
    torch.manual_seed(0)
    layer = bnn.BcosLinear(6, 4, bias=True, b=b).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    g = torch.randn(3, 5, 4, dtype=torch.float64)
    fast = _grads(layer, x, layer, g)
    ref = _grads(lambda t: formula_linear(t, layer), x, layer, g)
    for a, r in zip(fast, ref):
        assert torch.allclose(a, r, rtol=1e-9, atol=1e-11)
    assert torch.autograd.gradcheck(layer, (x[:1].clone().requires_grad_(True),))


@pytest.mark.parametrize("b", [2.0, 1.7])
def test_bcos_scale_function_gradcheck(b):
    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    s = (torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, c: fused.BcosScale.apply(a, c, b, 1, 1e-6), (z, s))
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: fused.SumSquares.apply(a, -1), (x,))
    assert torch.autograd.gradgradcheck(lambda a, c: fused.BcosScale.apply(a, c, b, 1, 1e-6), (z, s))


def test_fast_path_switches_and_dynamic_modes_use_reference(monkeypatch):
    from bcos_clip.nn import fused_layers

    layer = bnn.BcosConv2d(3, 4, 3, padding=1)
    calls = []
    monkeypatch.setattr(fused_layers, "conv", lambda *a, **k: calls.append(1) or layer.linear(a[0]))
    x = torch.randn(1, 3, 5, 5)
    layer(x)
    assert calls == [1]
    with fused.fast_path(False):
        layer(x)
    layer.fast = False
    layer(x)
    layer.fast = True
    with bnn.explanation_mode(layer):
        layer(x)
    with bnn.dynamic_mode(layer, "record"):
        layer(x)
    assert calls == [1]
    assert fused.fast_path_enabled()


def test_fast_path_supports_batched_backward_vmap():
    """is_grads_batched (vmap over backward) through the custom Functions, outside explanation mode."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(bnn.BcosConv2d(3, 6, 3, padding=1), torch.nn.Flatten(),
                              bnn.BcosLinear(6 * 16, 5)).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = net(x)
    eye = torch.eye(5, dtype=torch.float64).unsqueeze(1).expand(5, 2, 5)
    (batched,) = torch.autograd.grad(y, x, eye, is_grads_batched=True, retain_graph=True)
    for k in range(5):
        (gk,) = torch.autograd.grad(y, x, eye[k], retain_graph=True)
        assert torch.allclose(batched[k], gk, rtol=1e-10, atol=1e-12)
    jac = torch.func.jacrev(net)(x.detach())  # (2, 5, 2, 3, 4, 4): vmap through the Functions' backward
    assert torch.allclose(jac.sum(0), batched, rtol=1e-10, atol=1e-12)
    jac_fwd = torch.func.jacfwd(net)(x.detach())  # vmap through their forward (forward-mode AD)
    assert torch.allclose(jac_fwd, jac, rtol=1e-8, atol=1e-10)


def test_fast_path_keeps_dtype_and_channels_last_under_autocast():
    conv = bnn.BcosConv2d(6, 8, 3, padding=1)
    lin = bnn.BcosLinear(8, 4)
    x = torch.randn(2, 6, 7, 7).to(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        out = lin(y.mean((2, 3)))
    assert y.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    with torch.no_grad(), fused.fast_path(False), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = conv(x)
    assert torch.allclose(y.float(), ref.float(), rtol=2e-2, atol=2e-2)
