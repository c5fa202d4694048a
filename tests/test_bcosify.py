"""bcosify: functional equivalence at B=1 with biases, every weight used, nothing unconverted."""
import copy

import pytest
import torch

from bcos_clip import bcosify, load_clip
from bcos_clip import nn as bnn
from tests.conftest import make_bcos_friendly


def normalized(images, model):
    pp = model.visual.preprocess_cfg
    mean = torch.tensor(pp["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pp["std"]).view(1, 3, 1, 1)
    return (images - mean) / std


def assert_equivalent(model, size, n=2, rtol=1e-5):
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    converted = bcosify(model, b=1.0, bias=True)
    with torch.no_grad():
        ref = model.encode_image(normalized(images, model))
        out = converted.encode_image(images)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < rtol, rel
    return converted


@pytest.mark.parametrize("fixture,size", [("tiny_rn", 64), ("tiny_vit", 32)])
def test_equivalence_at_b1_with_bias(fixture, size, request):
    model = request.getfixturevalue(fixture)[0]
    before = copy.deepcopy(model.state_dict())
    converted = assert_equivalent(model, size)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the original model was modified"
    assert type(model.visual).__name__ in ("ModifiedResNet", "VisionTransformer")
    assert converted.report.unconverted == []


@pytest.mark.parametrize("fixture,size", [("tiny_rn_bcos", 64), ("tiny_vit_bcos", 32)])
def test_every_converted_module_runs_and_nothing_is_unconverted(fixture, size, request):
    model = request.getfixturevalue(fixture)
    assert model.report.unconverted == []
    ran, handles = set(), []
    bcos_types = (bnn.BcosConv2d, bnn.BcosLinear, bnn.UncenteredBatchNorm2d, bnn.BcosLayerNorm,
                  bnn.GatedActivation, bnn.BcosSelfAttention, bnn.BcosAttentionPool2d)
    names = {n for n, m in model.visual.named_modules() if isinstance(m, bcos_types)}
    for name, mod in model.visual.named_modules():
        if name in names:
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: ran.add(name)))
    try:
        with torch.no_grad():
            model.encode_image(torch.rand(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    assert names and ran == names, sorted(names - ran)
    replaced = {r[0] for r in model.report.replaced}
    assert replaced, "nothing reported as replaced"


def test_b2_removes_biases_and_rn_positional_embedding(tiny_rn_bcos):
    removed = {r[0] for r in tiny_rn_bcos.report.removed}
    assert "attnpool.positional_embedding" in removed
    assert tiny_rn_bcos.visual.attnpool.positional_embedding is None
    for mod in tiny_rn_bcos.visual.modules():
        if isinstance(mod, (bnn.BcosConv2d, bnn.BcosLinear, bnn.UncenteredBatchNorm2d)):
            assert mod.bias is None
            if not isinstance(mod, bnn.UncenteredBatchNorm2d):
                assert mod.b == 2.0


def test_pretrained_weights_are_carried_over(tiny_rn, tiny_rn_bcos):
    teacher = tiny_rn[0].visual
    assert torch.equal(tiny_rn_bcos.visual.layer1[0].conv2.weight, teacher.layer1[0].conv2.weight)
    assert torch.equal(tiny_rn_bcos.visual.attnpool.c_proj.weight, teacher.attnpool.c_proj.weight)
    assert torch.equal(tiny_rn_bcos.visual.layer2[0].bn1.running_var, teacher.layer2[0].bn1.running_var)


def test_vit_keeps_class_token_and_positional_embedding(tiny_vit, tiny_vit_bcos):
    teacher = tiny_vit[0].visual
    assert torch.equal(tiny_vit_bcos.visual.positional_embedding, teacher.positional_embedding)
    assert torch.equal(tiny_vit_bcos.visual.proj.weight, teacher.proj.t())
    w = teacher.transformer.resblocks[0].attn.in_proj_weight
    d = w.shape[1]
    assert torch.equal(tiny_vit_bcos.visual.blocks[0].attn.v_proj.weight, w[2 * d:])


def test_bad_input_errors(tiny_rn_bcos):
    with pytest.raises(ValueError, match="3 channels"):
        tiny_rn_bcos.encode_image(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="non-finite"):
        tiny_rn_bcos.encode_image(torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="unsupported image tower"):
        from bcos_clip.bcosify import BcosifySpec, convert_tower
        convert_tower(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), BcosifySpec(), (0.5,) * 3, (0.5,) * 3)


def test_unsupported_timm_tower_is_named():
    pytest.importorskip("timm")
    from bcos_clip.bcosify import BcosifySpec, convert_tower
    from open_clip.timm_model import TimmModel
    tower = TimmModel.__new__(TimmModel)
    torch.nn.Module.__init__(tower)
    with pytest.raises(ValueError, match="TimmModel"):
        convert_tower(tower, BcosifySpec(), (0.5,) * 3, (0.5,) * 3)


def test_official_compat_modes_are_exact_at_b1(tiny_rn):
    model = tiny_rn[0]
    images = torch.rand(2, 3, 64, 64)
    conv = bcosify(model, b=1.0, bias=True, input_encoding="normalize6")
    with torch.no_grad():
        ref = model.encode_image(normalized(images, model))
        out = conv.encode_image(images)
    assert ((out - ref).norm() / ref.norm()) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RN50", "ViT-B-16"])
def test_equivalence_full_size_architectures(name):
    torch.manual_seed(0)
    model, _, _ = load_clip(name)
    make_bcos_friendly(model, row_norm=1.0)
    assert_equivalent(model, 224, n=1)


@pytest.mark.parametrize("qk, layernorm", [("linear", "centered"), ("bcos", "uncentered")])
def test_vit_conversion_choices_explain_completely_and_reload(tiny_vit, qk, layernorm, tmp_path):
    """The recipe's choices (plain q/k, uncentered LayerNorm) are dynamic linear: contributions + bias
    = cosine; the spec is saved with the checkpoint and rebuilds the same tower."""
    from bcos_clip import load, save
    from bcos_clip.explain import explain

    model = bcosify(tiny_vit[0], b=2.0, bias=False, qk=qk, layernorm=layernorm).eval()
    norms = [m for m in model.visual.modules() if isinstance(m, bnn.BcosLayerNorm)]
    assert norms and all(m.centered == (layernorm == "centered") for m in norms)
    q_proj = model.visual.blocks[0].attn.q_proj
    assert isinstance(q_proj, bnn.BcosLinear) == (qk == "bcos")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    e = explain(model, images, ["a red circle", "a blue square"])
    assert float((e.completeness_error() / (1e-6 + 1e-4 * e.scores.abs())).max()) <= 1.0
    save(model, tmp_path / "ckpt")
    again = load(tmp_path / "ckpt")
    assert again.spec.layernorm == layernorm and again.spec.qk == qk
    with torch.no_grad():
        assert torch.allclose(again.encode_image(images), model.encode_image(images), atol=1e-6)


def test_uncentered_layernorm_is_an_rms_norm():
    ln = torch.nn.LayerNorm(8)
    with torch.no_grad():
        ln.weight.copy_(torch.linspace(0.5, 1.5, 8))
    x = torch.randn(3, 5, 8) + 2.0
    centered = bnn.BcosLayerNorm.from_layernorm(ln, bias=True)
    rms = bnn.BcosLayerNorm.from_layernorm(ln, centered=False)
    assert torch.allclose(centered(x), ln(x), atol=1e-5)  # centered + bias = the original LayerNorm
    expected = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + ln.eps) * ln.weight
    assert torch.allclose(rms(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="layernorm"):
        bcosify(torch.nn.Module(), layernorm="batch")


@pytest.fixture(scope="module")
def tiny_vit_stem():
    from tests.conftest import TINY_VIT

    torch.manual_seed(2)
    cfg = {**TINY_VIT, "vision_cfg": {**TINY_VIT["vision_cfg"], "conv_stem": [8, 16, 32]}}
    return make_bcos_friendly(load_clip("ViT-B-16", **cfg)[0], 2)


def test_conv_stem_vit_is_exact_at_b1_explains_and_reloads(tiny_vit_stem, tmp_path):
    from bcos_clip import load, save
    from bcos_clip.explain import explain

    assert isinstance(tiny_vit_stem.visual.conv1, bnn.ConvStem) and tiny_vit_stem.visual.conv1.stride == (8, 8)
    assert assert_equivalent(tiny_vit_stem, 32).report.unconverted == []
    model = bcosify(tiny_vit_stem, b=2.0, bias=False).eval()
    stem = model.visual.conv1
    assert isinstance(stem, bnn.ConvStem) and stem.stride == (8, 8) and stem[0].in_channels == 6
    assert {type(m).__name__ for m in stem} == {"BcosConv2d", "UncenteredBatchNorm2d", "GatedActivation"}
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    e = explain(model, images, ["a red circle", "a blue square"])
    assert float((e.completeness_error() / (1e-6 + 1e-4 * e.scores.abs())).max()) <= 1.0
    save(model, tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.allclose(load(tmp_path / "ckpt").encode_image(images), model.encode_image(images), atol=1e-6)


def test_conv_stem_must_match_the_patch_size():
    from tests.conftest import TINY_VIT, TINY_RN

    with pytest.raises(ValueError, match="patch_size"):
        load_clip("ViT-B-16", **{**TINY_VIT, "vision_cfg": {**TINY_VIT["vision_cfg"], "conv_stem": [8, 16]}})
    with pytest.raises(ValueError, match="VisionTransformer"):
        load_clip("RN50", **{**TINY_RN, "vision_cfg": {**TINY_RN["vision_cfg"], "conv_stem": [8, 16]}})


def test_vit_positional_as_input_term_is_the_same_function_and_leaves_the_bias(tiny_vit):
    """positional="input": the patch tokens' positional vectors times a constant-1 linear function of
    [x, 1-x]; exact at B = 1, same scores at B = 2, and no longer part of the explanation's bias (with
    the class token's terms zeroed the bias is 0; as a bias it is not)."""
    from bcos_clip.explain import explain

    exact = bcosify(tiny_vit[0], b=1.0, bias=True, positional="input")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = tiny_vit[0].encode_image(normalized(images, tiny_vit[0]))
        assert ((exact.encode_image(images) - ref).norm() / ref.norm()).item() < 1e-5
    as_bias = bcosify(tiny_vit[0], b=2.0).eval()
    as_input = bcosify(tiny_vit[0], b=2.0, positional="input").eval()
    prompts = ["a red circle", "a blue square"]
    e_bias, e_input = explain(as_bias, images, prompts), explain(as_input, images, prompts)
    assert torch.allclose(e_input.scores, e_bias.scores, atol=1e-5)
    assert float((e_input.completeness_error() / (1e-6 + 1e-4 * e_input.scores.abs())).max()) <= 1.0
    for model in (as_bias, as_input):  # leave only the patch positions as additive terms
        with torch.no_grad():
            model.visual.class_embedding.zero_()
            model.visual.positional_embedding[0] = 0
    assert explain(as_input, images, prompts).bias.abs().max() < 1e-6
    assert explain(as_bias, images, prompts).bias.abs().max() > 1e-3
    with pytest.raises(ValueError, match="positional"):
        bcosify(tiny_vit[0], positional="input", input_encoding="normalize6")


def test_vit_positional_scale_scales_only_the_patch_positions(tiny_vit):
    """positional_scale: the converted tower's patch positions are the original's times the scale (the
    class token's position and the original model untouched); 1 stays exact at B = 1; <= 0 is refused."""
    original = tiny_vit[0].visual.positional_embedding.detach().clone()
    scaled = bcosify(tiny_vit[0], b=1.0, bias=True, positional_scale=0.25).eval()
    pos = scaled.visual.positional_embedding.detach()
    assert torch.allclose(pos[1:], 0.25 * original[1:]) and torch.equal(pos[0], original[0])
    assert torch.equal(tiny_vit[0].visual.positional_embedding, original)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # the same as the original with its patch positions scaled
        ref_model = copy.deepcopy(tiny_vit[0])
        ref_model.visual.positional_embedding[1:] *= 0.25
        ref = ref_model.encode_image(normalized(images, ref_model))
        assert ((scaled.encode_image(images) - ref).norm() / ref.norm()).item() < 1e-5
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positional_scale"):
            bcosify(tiny_vit[0], positional_scale=bad)


def test_vit_positional_drop_removes_the_patch_positions(tiny_vit):
    dropped = bcosify(tiny_vit[0], b=1.0, bias=True, positional="drop").eval()
    assert "positional_embedding" in {r[0] for r in dropped.report.removed}
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # the same as the original with its patch positions zeroed
        ref_model = copy.deepcopy(tiny_vit[0])
        ref_model.visual.positional_embedding[1:] = 0
        ref = ref_model.encode_image(normalized(images, ref_model))
        assert ((dropped.encode_image(images) - ref).norm() / ref.norm()).item() < 1e-5
