"""The fast paths added for the training step's memory and kernel count (nn.fused_layers, the native
BatchNorm / LayerNorm / activation paths) against their formulas: float64 forward and gradients,
gradcheck, the fp16 underflow edge, and the composable Functions they replace under torch.func."""
import pytest
import torch
import torch.nn.functional as F

from bcos_clip import nn as bnn
from bcos_clip.nn import fused, fused_layers
from tests.test_perf_fused import CONVS as _CONVS

CONVS = _CONVS + [dict(in_channels=5, out_channels=7, kernel_size=2, stride=2)]


@pytest.mark.parametrize("cfg", CONVS)
def test_box_sum_adjoint_is_the_autograd_of_box_sum(cfg):
    conv = bnn.BcosConv2d(**cfg)
    sq = torch.rand(2, 1, 9, 8, dtype=torch.float64, requires_grad=True)
    out = fused.box_sum(sq, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    g = torch.randn_like(out)
    (ref,) = torch.autograd.grad(out, sq, g)
    adj = fused_layers.box_sum_adjoint(g, (9, 8), conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    assert torch.allclose(adj, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cfg", CONVS)
def test_whole_layer_conv_function_gradcheck_and_used(cfg, monkeypatch):
    """Gradients to x, weight (and bias) by finite differences (float64 equality with the formula:
    tests/test_perf_fused.py)."""
    torch.manual_seed(0)
    cfg = dict(cfg, in_channels=3, out_channels=2)
    layer = bnn.BcosConv2d(**cfg, bias=cfg.get("padding") == 1).double()
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    calls = []
    real = fused_layers.BcosConvFn.apply
    monkeypatch.setattr(fused_layers.BcosConvFn, "apply", lambda *a: calls.append(1) or real(*a))
    assert torch.autograd.gradcheck(layer, (x,))
    assert calls, "the whole-layer Function did not run"


@pytest.mark.parametrize("bias", [False, True])
def test_whole_layer_linear_function_gradcheck(bias):
    torch.manual_seed(0)
    layer = bnn.BcosLinear(6, 4, bias=bias, b=2.5).double()
    x = torch.randn(3, 2, 6, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True) if bias else None
    args = (x, w) + ((b,) if bias else ())
    fn = (lambda x, w, b=None: fused_layers.BcosLinearFn.apply(x, w, b, 2.5, 1e-6, torch.float64))
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("features", [None, ()])
def test_fp16_gradient_at_the_underflow_edge_equals_the_reference(features):
    """z = 1e-4, ||x|| = 10: y = z |z| / ||x|| = 1e-9 underflows fp16; the gradient 2 |z| / ||x|| x must
    not (before: the factor recomputed from y = 0 gave 0)."""
    torch.manual_seed(0)
    lin = bnn.BcosLinear(3, 2).half()
    conv = bnn.BcosConv2d(3, 2, 1).half()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1e-5, 0.0, 0.0], [0.3, -0.2, 0.1]]))
        conv.weight.copy_(lin.weight.view(2, 3, 1, 1))
    x = torch.tensor([[10.0, 0.0, 0.0], [1.0, 2.0, -1.0]], dtype=torch.float16)
    for layer, inp in ((lin, x), (conv, x.view(2, 3, 1, 1))):
        grads = {}
        for fast in (True, False):
            xi = inp.detach().clone().requires_grad_(True)
            with fused.fast_path(fast, features=features):
                y = layer(xi)
                grads[fast] = torch.autograd.grad(y.float().sum(), (xi, layer.weight))
        fast_g, ref_g = grads[True], grads[False]
        assert ref_g[1].flatten()[0].item() == pytest.approx(2e-4, rel=0.1)  # fp16: not 0
        for a, r in zip(fast_g, ref_g):
            assert torch.allclose(a.float(), r.float(), rtol=2e-3, atol=1e-7), (a, r)


def test_scale_backward_from_z_equals_from_y_in_float64():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    s = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5
    g = torch.randn_like(z)
    for b in (2.0, 1.7):
        y = fused._scale_forward_torch(z, s, b, 1e-6)
        for a, r in zip(fused._scale_backward_torch(g, z, s, b, 1, 1e-6, from_z=True),
                        fused._scale_backward_torch(g, y, s, b, 1, 1e-6, from_z=False)):
            assert torch.allclose(a, r, rtol=1e-10, atol=1e-12)


def _formula_and_fast(module, x, features=None):
    out = {}
    for fast in (True, False):
        for p in module.parameters():
            p.grad = None
        xi = x.detach().clone().requires_grad_(True)
        with fused.fast_path(fast, features=features):
            y = module(xi)
        g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(y, [xi] + list(module.parameters()), g)
        out[fast] = [y.detach()] + list(grads)
    return out[True], out[False]


@pytest.mark.parametrize("kind", ["gelu", "gelu_tanh", "quick_gelu", "relu"])
def test_native_activations_equal_gate_formula_float64(kind):
    act = bnn.GatedActivation(kind)
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    fast, ref = _formula_and_fast(act, x)
    for a, r in zip(fast, ref):
        assert torch.allclose(a, r, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(bnn.activations.QuickGELUFn.apply, (x[:1].clone().requires_grad_(True),))


@pytest.mark.parametrize("bias", [False, True])
def test_native_layernorm_equals_formula_float64_and_keeps_dtype(bias):
    torch.manual_seed(0)
    ln = bnn.BcosLayerNorm(6, bias=bias).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 4, 6, dtype=torch.float64) * 3 + 1
    fast, ref = _formula_and_fast(ln, x)
    for a, r in zip(fast, ref):
        assert torch.allclose(a, r, rtol=1e-10, atol=1e-12)
    ln32 = bnn.BcosLayerNorm(6).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ln32(torch.randn(2, 6).bfloat16())
    assert y.dtype == torch.bfloat16


def test_explanation_mode_keeps_the_formulas(monkeypatch):
    """Detached factors need the formula paths: the native LayerNorm / GELU must not run there."""
    ln, act = bnn.BcosLayerNorm(4), bnn.GatedActivation("gelu")
    monkeypatch.setattr(F, "layer_norm", lambda *a, **k: pytest.fail("native layer_norm in explanation mode"))
    monkeypatch.setitem(bnn.activations.FAST, "gelu", lambda x: pytest.fail("native gelu in explanation mode"))
    x = torch.randn(2, 4, requires_grad=True)
    with bnn.explanation_mode(ln), bnn.explanation_mode(act):
        act(ln(x)).sum().backward()


def test_uncentered_batchnorm_fast_path_in_bf16_and_channels_last():
    torch.manual_seed(0)
    bn = bnn.UncenteredBatchNorm2d(6).train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
    x = (torch.randn(4, 6, 5, 5) * 2 + 3).bfloat16().contiguous(memory_format=torch.channels_last)
    fast, ref = _formula_and_fast(bn, x)
    assert fast[0].dtype == torch.bfloat16 and fast[0].is_contiguous(memory_format=torch.channels_last)
    for a, r in zip(fast, ref):  # within bf16 rounding of the formula (which rounds more often)
        assert torch.allclose(a.float(), r.float(), rtol=3e-2, atol=3e-2 * r.float().abs().max().item())


def test_uncentered_batchnorm_fast_path_with_bf16_weights_updates_running_var():
    """Pure bf16 training (--precision bf16) converts the BN's weight and running variance to bf16."""
    torch.manual_seed(0)
    x = (torch.randn(4, 6, 5, 5) * 2 + 3).bfloat16()
    run_vars = []
    for fast in (True, False):
        bn = bnn.UncenteredBatchNorm2d(6).bfloat16().train()
        with fused.fast_path(fast):
            bn(x.clone().requires_grad_(True)).float().sum().backward()
        run_vars.append(bn.running_var.float())
    assert torch.allclose(run_vars[0], run_vars[1], rtol=1e-2)
