"""Eval-mode BN folding (bcos_clip.nn.fold): folded == unfolded, outputs and explanations."""
import pytest
import torch

import bcos_clip
from bcos_clip import nn as bnn
from bcos_clip.nn.fold import conv_bn_pairs, fold_batchnorms


@pytest.mark.parametrize("b", [2.0, 1.0, 2.5])
def test_fold_factor_reproduces_scaled_bcos_conv_float64(b):
    torch.manual_seed(0)
    conv = bnn.BcosConv2d(4, 6, 3, padding=1, b=b, bias=b == 1.0).double()
    bn = bnn.UncenteredBatchNorm2d(6, bias=b == 1.0).double().eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.7, 0.2, 2.0, -1.1, 0.9]))
        bn.running_var.uniform_(0.3, 3.0)
        if bn.bias is not None:
            bn.bias.uniform_(-1, 1)
    net = torch.nn.Sequential(conv, bn)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    folded = fold_batchnorms(net)
    assert isinstance(folded[1], torch.nn.Identity) and isinstance(net[1], bnn.UncenteredBatchNorm2d)
    assert torch.allclose(folded(x), net(x), rtol=1e-6, atol=1e-6)  # the BN scale is computed in fp32
    if b == 2.0:  # the closed form of the issue: w' = sign(gamma) sqrt(|gamma| / sigma) w
        sigma = torch.sqrt(bn.running_var + bn.eps)
        c = bn.weight.sign() * torch.sqrt(bn.weight.abs() / sigma)
        assert torch.allclose(folded[0].weight, conv.weight * c.view(-1, 1, 1, 1), rtol=1e-12)


def test_fold_skips_bn_shift_when_b_is_not_one_and_refuses_train_mode():
    net = torch.nn.Sequential(bnn.BcosConv2d(3, 4, 1, b=2.0), bnn.UncenteredBatchNorm2d(4, bias=True)).eval()
    folded = fold_batchnorms(net)
    assert isinstance(folded[1], bnn.UncenteredBatchNorm2d)  # not exact: left alone
    x = torch.randn(1, 3, 4, 4)
    assert torch.allclose(folded(x), net(x))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorms(net.train())


@pytest.fixture
def eval_rn_bcos(tiny_rn_bcos):
    was = tiny_rn_bcos.training
    yield tiny_rn_bcos.eval()
    tiny_rn_bcos.train(was)


def test_fold_tiny_rn_tower_output_and_explanations_unchanged(eval_rn_bcos):
    model = eval_rn_bcos
    n_pairs = len(conv_bn_pairs(model.visual))
    folded = fold_batchnorms(model)
    assert n_pairs == 3 + 4 * 3 + 4  # stem conv1-3, 4 bottlenecks x 3, 4 downsamples
    assert not any(isinstance(m, bnn.UncenteredBatchNorm2d) for m in folded.modules())
    torch.manual_seed(0)
    images = torch.rand(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        ref, out = model.encode_image(images), folded.encode_image(images)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    images, prompts = images[:1], torch.randn(2, model.embed_dim)
    e_ref = bcos_clip.explain(model, images, prompts)
    e_fold = bcos_clip.explain(folded, images, prompts)
    scale = e_ref.contributions.abs().max().item()
    assert torch.allclose(e_fold.contributions, e_ref.contributions, rtol=1e-3, atol=1e-4 * scale)
    assert torch.allclose(e_fold.scores, e_ref.scores, atol=1e-5)
    err = e_fold.completeness_error()
    assert (err <= 1e-6 + 1e-4 * e_fold.scores.abs()).all()


def test_fold_b1_with_biases_equals_original_clip_tower(tiny_rn):
    clip = tiny_rn[0]
    was = clip.training
    clip.eval()
    try:
        model = bcos_clip.bcosify(clip, b=1.0, bias=True, attnpool_positional=True).eval()
        folded = fold_batchnorms(model.visual)
        images = torch.rand(2, 3, model.image_size, model.image_size)
        with torch.no_grad():
            teacher = clip.encode_image((images - torch.tensor(model.source["preprocess_cfg"]["mean"])
                                         .view(1, 3, 1, 1)) / torch.tensor(model.source["preprocess_cfg"]["std"])
                                        .view(1, 3, 1, 1))
            out = folded(bnn.add_inverse(images))
        assert torch.allclose(out, teacher, rtol=1e-4, atol=1e-4 * teacher.abs().max().item())
    finally:
        clip.train(was)
