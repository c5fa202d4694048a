"""Post-hoc baselines on a plain CLIP: shapes, batched == one prompt at a time, IG completeness, hooks."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.explain import baselines
from bcos_clip.explain.baselines import BASELINES, gradcam_layer


@pytest.fixture(scope="module")
def plain_rn(tiny_rn):
    """The tiny RN teacher as a PlainCLIP (images in [0, 1], CLIP normalisation inside)."""
    from bcos_clip.models import PlainCLIP

    return PlainCLIP.from_clip(tiny_rn[0], tiny_rn[2]).eval()


@pytest.fixture(scope="module")
def plain_vit(tiny_vit):
    from bcos_clip.models import PlainCLIP

    return PlainCLIP.from_clip(tiny_vit[0], tiny_vit[2]).eval()


@pytest.mark.parametrize("fixture", ["plain_rn", "plain_vit"])
def test_shapes_and_batched_equals_single(fixture, request):
    model = request.getfixturevalue(fixture)
    s = model.image_size
    images = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    text = F.normalize(torch.randn(3, model.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    for name, fn in BASELINES.items():
        maps = fn(model, images, text)
        assert maps.shape == (1, 3, s, s) and torch.isfinite(maps).all(), name
        if name == "gradcam":  # relu: a prompt the image speaks against may get an all-zero map
            assert (maps >= 0).all() and maps.amax() > 0
        else:
            assert maps.abs().amax((-2, -1)).min() > 0, f"{name} gave an all-zero map"
        if name in ("gradient", "gradcam"):
            single = fn(model, images, text[1:2])
            assert torch.allclose(single[:, 0], maps[:, 1], atol=1e-5 * maps.abs().max().item(), rtol=1e-4), name
    assert not model.training
    layer, _ = gradcam_layer(model)
    assert not layer._forward_hooks


def test_gradient_matches_autograd_and_ig_is_complete():
    class Toy(nn.Module):
        """A smooth model with a CLIP-like interface: linear image map, mean colour reference."""

        image_size, embed_dim = 8, 5

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.w = nn.Parameter(torch.randn(5, 3 * 8 * 8, generator=g) / 8)
            self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))

        def encode_image(self, x):
            return torch.tanh(x - self.mean).flatten(1) @ self.w.T + 0.1

    model = Toy()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = F.normalize(torch.randn(4, 5, generator=torch.Generator().manual_seed(3)), dim=-1)
    g = BASELINES["gradient"](model, x, t)
    for k in range(4):
        xk = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad((F.normalize(model.encode_image(xk), dim=-1) @ t[k]).sum(), xk)
        assert torch.allclose(g[:, k], ref.sum(1), atol=1e-6)
    ixg = BASELINES["input_x_gradient"](model, x, t)
    assert torch.allclose(ixg, (baselines.input_gradients(model, x, t) * (x - model.mean)[:, None]).sum(2))
    ig = baselines.integrated_gradients(model, x, t, steps=64)
    with torch.no_grad():
        cos = lambda z: F.normalize(model.encode_image(z), dim=-1) @ t.T  # noqa: E731
        expected = cos(x) - cos(model.mean.expand_as(x))
    assert torch.allclose(ig.sum((-2, -1)), expected, atol=2e-3)


@pytest.mark.parametrize("per_image_text", [False, True])
def test_integrated_gradients_batched_path_equals_one_point_per_pass(plain_rn, per_image_text):
    """The fast path (several path points per model call) against its slow twin (one point per call)."""
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    t = F.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(5)), dim=-1)
    if per_image_text:
        t = F.normalize(torch.randn(3, 2, 64, generator=torch.Generator().manual_seed(6)), dim=-1)
    fast = baselines.integrated_gradients(plain_rn, x, t, steps=7)  # all 7 points in one pass
    slow = baselines.integrated_gradients(plain_rn, x, t, steps=7, pass_images=x.shape[0])
    uneven = baselines.integrated_gradients(plain_rn, x, t, steps=7, pass_images=2 * x.shape[0])  # 2 + 2 + 2 + 1
    scale = slow.abs().max()
    assert scale > 0
    assert (fast - slow).abs().max() <= 1e-5 * scale and (uneven - slow).abs().max() <= 1e-5 * scale


def test_gradcam_removes_its_hook_on_errors(plain_rn, monkeypatch):
    layer, tokens = gradcam_layer(plain_rn)
    assert not tokens

    def boom(*a, **k):
        raise RuntimeError("boom")
        yield  # pragma: no cover

    monkeypatch.setattr(baselines, "batched_grads", boom)
    plain_rn.train()
    with pytest.raises(RuntimeError, match="boom"):
        baselines.gradcam(plain_rn, torch.rand(1, 3, 64, 64), F.normalize(torch.randn(2, 64), dim=-1))
    assert not layer._forward_hooks and plain_rn.training
    plain_rn.eval()


def test_gradcam_layer_for_every_tower(tiny_rn_bcos, tiny_vit_bcos, plain_vit):
    assert gradcam_layer(tiny_rn_bcos)[0] is tiny_rn_bcos.visual.layer4
    assert gradcam_layer(plain_vit)[0] is plain_vit.visual.transformer.resblocks[-1].ln_1
    assert gradcam_layer(tiny_vit_bcos)[1]
    with pytest.raises(ValueError, match="GradCAM"):
        gradcam_layer(type("M", (), {"visual": nn.Linear(2, 2)})())
