"""Completeness of the explanation core: contributions + bias = scores, batched = one at a time."""
import pytest
import torch

import bcos_clip
from bcos_clip import explain


def completeness_ok(e):
    lhs = e.contributions.sum((-2, -1)) + e.bias
    return torch.all((lhs - e.scores).abs() <= 1e-6 + 1e-4 * e.scores.abs())


@pytest.mark.parametrize("fixture,size", [("tiny_rn_bcos", 64), ("tiny_vit_bcos", 32)])
def test_completeness_and_batching(fixture, size, request):
    model = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    images = torch.rand(2, 3, size, size)
    text = torch.randn(5, model.embed_dim)
    e = explain(model, images, text)
    assert e.contributions.shape == (2, 5, size, size)
    assert e.scores.shape == e.bias.shape == (2, 5)
    assert completeness_ok(e)
    with torch.no_grad():
        emb = model.encode_image(images, normalize=True)
    assert torch.allclose(e.scores, emb @ torch.nn.functional.normalize(text, dim=-1).T, atol=1e-5)
    for k in (0, 3):
        single = explain(model, images, text[k:k + 1])
        assert torch.allclose(single.contributions[:, 0], e.contributions[:, k], atol=1e-6, rtol=1e-4)
        assert torch.allclose(single.bias[:, 0], e.bias[:, k], atol=1e-7)
    chunked = explain(model, images, text, k_chunk=2)
    assert torch.allclose(chunked.contributions, e.contributions, atol=1e-6, rtol=1e-4)


def test_rn_bias_is_zero_and_vit_bias_is_measured(tiny_rn_bcos, tiny_vit_bcos):
    e = explain(tiny_rn_bcos, torch.rand(1, 3, 64, 64), torch.randn(3, 64))
    assert torch.all(e.bias.abs() < 1e-7)
    assert torch.allclose(e.contributions.sum((-2, -1)), e.scores, atol=1e-6, rtol=1e-4)
    v = explain(tiny_vit_bcos, torch.rand(1, 3, 32, 32), torch.randn(3, 64))
    assert v.bias.abs().max() > 1e-4  # class token and positional embedding
    assert completeness_ok(v)


@pytest.mark.parametrize("fixture,size", [("tiny_rn_bcos", 64), ("tiny_vit_bcos", 32)])
def test_explanation_mode_changes_no_output(fixture, size, request):
    model = request.getfixturevalue(fixture).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        a = model.encode_image(x)
        with bcos_clip.explanation_mode(model):
            b = model.encode_image(x)
    assert torch.allclose(a, b, atol=1e-6)
    assert not any(m.detach_dynamic for m in bcos_clip.nn.dynamic_modules(model))


def test_string_prompts_and_errors(tiny_rn_bcos, tiny_rn):
    e = explain(tiny_rn_bcos, torch.rand(1, 3, 64, 64), ["a red circle", "a blue square"])
    assert e.prompts == ["a red circle", "a blue square"] and completeness_ok(e)
    with pytest.raises(ValueError, match="non-empty"):
        explain(tiny_rn_bcos, torch.rand(1, 3, 64, 64), [])
    with pytest.raises(TypeError, match="post-hoc baselines"):
        explain(tiny_rn[0], torch.rand(1, 3, 64, 64), ["a dog"])
    with pytest.raises(ValueError, match="dimension"):
        explain(tiny_rn_bcos, torch.rand(1, 3, 64, 64), torch.randn(2, 7))


def test_explanation_mode_is_restored_on_exceptions(tiny_rn_bcos):
    with pytest.raises(ValueError):
        explain(tiny_rn_bcos, torch.full((1, 3, 64, 64), float("nan")), torch.randn(2, 64))
    assert not any(m.detach_dynamic or m._dyn_mode for m in bcos_clip.nn.dynamic_modules(tiny_rn_bcos))
