"""The two explanation paths (K prompt rows vs the D-row contribution tensor) agree, and both are complete."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from bcos_clip.explain import ImageContributions, contribution_tensor, explain, image_contributions

PROMPTS = ["a red circle", "a blue square", "a green star", "a yellow triangle"]


def complete(e, tol=1e-4):
    lhs = e.contributions.sum((-2, -1)) + e.bias
    return bool(torch.all((lhs - e.scores).abs() <= 1e-6 + tol * e.scores.abs()))


@pytest.mark.parametrize("fixture,size", [("tiny_rn_bcos", 64), ("tiny_vit_bcos", 32)])
def test_string_prompts_both_paths_agree_and_are_complete(fixture, size, request):
    model = request.getfixturevalue(fixture)
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    a = explain(model, images, PROMPTS, method="prompts", return_weights=True)
    b = explain(model, images, PROMPTS, method="basis", return_weights=True)
    assert complete(a) and complete(b)
    assert a.prompts == b.prompts == PROMPTS
    for name in ("contributions", "scores", "bias", "weights"):
        x, y = getattr(a, name), getattr(b, name)
        assert torch.allclose(x, y, atol=1e-6 * x.abs().max().item() + 1e-9, rtol=1e-4), name
    one = explain(model, images, PROMPTS[2:3], method="prompts")  # batched == one at a time
    assert torch.allclose(one.contributions[:, 0], a.contributions[:, 2], atol=1e-9, rtol=1e-4)
    assert torch.allclose(one.bias[:, 0], a.bias[:, 2], atol=1e-8)


def test_contribution_tensor_serves_new_prompt_sets(tiny_vit_bcos):
    model = tiny_vit_bcos
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cache = image_contributions(model, images, d_chunk=16, n_chunk=1)
    assert isinstance(cache, ImageContributions) and cache.contributions.shape == (2, 64, 32, 32)
    assert torch.all(cache.completeness_error() <= 1e-6 + 1e-4 * cache.embedding.abs())
    assert cache.nbytes >= cache.contributions.numel() * 4
    assert cache.to("cpu").contributions.data_ptr() == cache.contributions.data_ptr()  # no copy when in place
    m = contribution_tensor(model, images)
    assert torch.allclose(m, cache.contributions, atol=1e-9, rtol=1e-4)
    for seed in (2, 3):  # any new set of unit prompts is one einsum away
        text = F.normalize(torch.randn(5, 64, generator=torch.Generator().manual_seed(seed)), dim=-1)
        fast = cache.explain(text)
        ref = explain(model, images, text, method="prompts")
        assert complete(fast)
        assert torch.allclose(fast.contributions, torch.einsum("ndhw,kd->nkhw", m, text), atol=1e-9, rtol=1e-4)
        assert torch.allclose(fast.contributions, ref.contributions, atol=1e-8, rtol=1e-3)
        assert torch.allclose(fast.bias, ref.bias, atol=1e-7) and torch.allclose(fast.scores, ref.scores, atol=1e-6)
    with pytest.raises(ValueError, match="keep_weights"):
        cache.explain(text, return_weights=True)
    with pytest.raises(ValueError, match="text embeddings"):
        cache.explain(torch.randn(3, 7))


def test_auto_picks_basis_when_k_exceeds_d_and_per_image_prompts(tiny_vit_bcos, monkeypatch):
    core = importlib.import_module("bcos_clip.explain.core")  # bcos_clip.explain is the function

    model = tiny_vit_bcos
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    calls = []
    real = core.image_contributions
    monkeypatch.setattr(core, "image_contributions", lambda *a, **k: calls.append(1) or real(*a, **k))
    small = explain(model, images, torch.randn(3, 64))
    assert not calls and complete(small)
    big = explain(model, images, torch.randn(65, 64), k_chunk=33)
    assert calls and big.contributions.shape == (2, 65, 32, 32) and complete(big)
    per_image = torch.randn(2, 3, 64)  # (N, K, D): a different prompt set for every image
    e = explain(model, images, per_image, n_chunk=1)
    assert complete(e)
    for n in range(2):
        ref = explain(model, images[n:n + 1], per_image[n])
        assert torch.allclose(e.contributions[n], ref.contributions[0], atol=1e-9, rtol=1e-4)
    with pytest.raises(ValueError, match="per-image"):
        explain(model, images, torch.randn(3, 3, 64))
    with pytest.raises(ValueError, match="method"):
        explain(model, images, torch.randn(3, 64), method="fast")


def test_templates_option(tiny_rn_bcos):
    images = torch.rand(1, 3, 64, 64)
    default = explain(tiny_rn_bcos, images, ["a dog"])
    explicit = explain(tiny_rn_bcos, images, ["a dog"], templates=["a photo of {}."])
    assert torch.allclose(default.scores, explicit.scores)
    many = explain(tiny_rn_bcos, images, ["a dog"], templates="openai")  # open_clip's 80 ImageNet templates
    assert complete(many) and not torch.allclose(many.scores, default.scores)
    with pytest.raises(ValueError, match="templates"):
        explain(tiny_rn_bcos, images, ["a dog"], templates="no-such-set")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny_rn_bcos, tiny_vit_bcos):
    import copy

    from bcos_clip.explain.baselines import gradcam

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions round at ~1e-3: beyond the 1e-4 tolerance
    try:
        for model, size in ((tiny_rn_bcos, 64), (tiny_vit_bcos, 32)):
            images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(5))
            cpu = explain(model, images, PROMPTS)
            gpu_model = copy.deepcopy(model).cuda()
            for method in ("prompts", "basis"):
                gpu = explain(gpu_model, images.cuda(), PROMPTS, method=method).cpu()
                assert complete(gpu), method
                scale = cpu.contributions.abs().max().item()
                assert torch.allclose(gpu.contributions, cpu.contributions, atol=1e-4 * scale, rtol=1e-3), method
            text = F.normalize(torch.randn(3, model.embed_dim), dim=-1)
            assert gradcam(gpu_model, images.cuda(), text.cuda()).shape == (2, 3, size, size)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
