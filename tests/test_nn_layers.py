"""B-cos layers against their formulas in float64, gradcheck, and dtype handling."""
import math

import pytest
import torch
import torch.nn.functional as F

from bcos_clip import nn as bnn


def naive_patch_norm(x, conv: torch.nn.Conv2d):
    """||x_patch|| by a full convolution of x^2 with a ones kernel (the slow twin)."""
    ones = torch.ones(conv.groups, conv.in_channels // conv.groups, *conv.kernel_size, dtype=x.dtype)
    return (F.conv2d(x.square(), ones, None, conv.stride, conv.padding, conv.dilation, conv.groups) + 1e-6).sqrt()


def reference_conv(x, conv: torch.nn.Conv2d, b: float):
    z = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    norm = naive_patch_norm(x, conv)  # (N, G, H, W)
    g = conv.groups
    n, c, h, w = z.shape
    norm = norm.repeat_interleave(c // g, dim=1)
    return z * (z.abs() / norm) ** (b - 1)


CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=1, stride=2),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=2),  # padding > k/2
]


@pytest.mark.parametrize("cfg", CONVS)
@pytest.mark.parametrize("b", [1.0, 2.0, 2.5])
@pytest.mark.parametrize("bias", [False, True])
def test_bcos_conv_matches_formula_float64(cfg, b, bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(**cfg, bias=bias).double()
    layer = bnn.BcosConv2d.from_conv(conv, b=b, bias=bias).double()
    x = torch.randn(2, cfg["in_channels"], 9, 9, dtype=torch.float64)
    norm = bnn.patch_norm(x, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert torch.allclose(norm.double(), naive_patch_norm(x, conv), rtol=1e-6)
    assert torch.allclose(layer(x), reference_conv(x, conv, b), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cfg", CONVS[:5])
def test_bcos_conv_gradcheck(cfg):
    torch.manual_seed(0)
    layer = bnn.BcosConv2d(**cfg, b=2.0).double()
    x = torch.randn(1, cfg["in_channels"], 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    conv = torch.nn.Conv2d(**cfg, bias=False).double()
    conv.weight.data.copy_(layer.weight.data)
    y = layer(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(reference_conv(x, conv, 2.0).sum(), x)
    assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("b", [1.0, 2.0, 3.0])
def test_bcos_linear_matches_formula_and_gradcheck(b):
    torch.manual_seed(0)
    lin = torch.nn.Linear(7, 5).double()
    layer = bnn.BcosLinear.from_linear(lin, b=b, bias=True).double()
    x = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)

    def ref(t):
        z = F.linear(t, lin.weight, lin.bias)
        return z * (z.abs() / (t.square().sum(-1, keepdim=True) + 1e-6).sqrt()) ** (b - 1)

    assert torch.allclose(layer(x), ref(x), rtol=1e-6)
    assert torch.autograd.gradcheck(layer, (x,))
    (g,) = torch.autograd.grad(layer(x).sum(), x)
    (g_ref,) = torch.autograd.grad(ref(x).sum(), x)
    assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-6)


def test_bcos_layers_keep_dtype_under_autocast():
    conv = bnn.BcosConv2d(3, 4, 3, padding=1)
    lin = bnn.BcosLinear(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16
        assert lin(torch.randn(2, 8)).dtype == torch.bfloat16


def test_uncentered_batchnorm_equals_batchnorm_in_eval_and_uses_batch_var_in_train():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(4, 5, 6, 6)
    ub = bnn.UncenteredBatchNorm2d.from_batchnorm(bn, bias=True).eval()
    assert torch.allclose(ub(x), bn(x), atol=1e-6)
    ub_nobias = bnn.UncenteredBatchNorm2d.from_batchnorm(bn, bias=False).train()
    before = ub_nobias.running_var.clone()
    y = ub_nobias(x)
    var = x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(y, x * (bn.weight / torch.sqrt(var + bn.eps)).view(1, -1, 1, 1), atol=1e-6)
    assert not torch.allclose(ub_nobias.running_var, before)


def test_layernorm_and_gates():
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(16)
    ln.weight.data.uniform_(0.5, 1.5)
    ln.bias.data.uniform_(-1, 1)
    x = torch.randn(3, 16, requires_grad=True)
    bl = bnn.BcosLayerNorm.from_layernorm(ln, bias=True)
    assert torch.allclose(bl(x), ln(x), atol=1e-5)
    assert torch.allclose(bnn.GatedActivation("gelu")(x), F.gelu(x), atol=1e-6)
    assert torch.allclose(bnn.GatedActivation("gelu_tanh")(x), F.gelu(x, approximate="tanh"), atol=1e-6)
    assert torch.allclose(bnn.GatedActivation("quick_gelu")(x), x * torch.sigmoid(1.702 * x), atol=1e-6)
    # Explanation mode: the gate / std are detached, so the layer is linear in x: f(2x) = 2 f(x)
    act = bnn.GatedActivation("gelu")
    with bnn.explanation_mode(act):
        y = act(x)
        (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(g, 0.5 * (1 + torch.erf(x / math.sqrt(2))), atol=1e-6)


def test_folded_normalization_equals_normalized_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    mean, std = (0.48, 0.45, 0.40), (0.27, 0.26, 0.28)
    x = torch.rand(2, 3, 11, 11)
    ref = conv((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    folded = bnn.BcosConv2d.from_conv(conv, b=1.0, weight=bnn.fold_normalization(conv.weight, mean, std))
    assert torch.allclose(folded(bnn.add_inverse(x)), ref, atol=1e-5)
    official = bnn.BcosConv2d.from_conv(
        conv, b=1.0, weight=bnn.input_encoding.official_first_weight(conv.weight))
    assert torch.allclose(official(bnn.Normalize6(mean, std)(bnn.add_inverse(x))), ref, atol=1e-5)


def test_dynamic_replay_requires_record():
    lin = bnn.BcosLinear(4, 3)
    with pytest.raises(RuntimeError, match="no recorded factor"):
        with bnn.dynamic_mode(lin, "replay"):
            lin(torch.zeros(1, 4))


def test_uncentered_batchnorm_fast_training_path_matches_formula_float64():
    from bcos_clip.nn.fused import fast_path

    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    outs = {}
    for fast in (True, False):
        bn = bnn.UncenteredBatchNorm2d(4).double().train()
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([0.6, 0.9, 1.2, 1.4], dtype=torch.float64))
        with fast_path(fast):
            y = bn(x)
            g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
            gx, gw = torch.autograd.grad(y, (x, bn.weight), g)
        outs[fast] = (y.detach(), gx, gw, bn.running_var.clone())
    for a, b in zip(outs[True], outs[False]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    bn = bnn.UncenteredBatchNorm2d(4).double().train()
    consts = bn._consts.double()
    assert torch.autograd.gradcheck(
        lambda t, w: bnn.norms._UncenteredBNTrain.apply(t, w, bn.running_var, consts, 0.1, 1e-5),
        (x, bn.weight.detach().clone().requires_grad_(True)))
