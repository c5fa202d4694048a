"""Losses against float64 reference formulas (METHOD.md §3), and their properties."""
from __future__ import annotations

import math

import pytest
import torch

from bcos_clip.train.losses import LOSSES, LossParams


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def ref_text_kd(s, t, text, own, temperature, weight):
    """Loop-per-image float64 twin of text_kd."""
    s, t, text = _unit(s.double()), _unit(t.double()), _unit(text.double())
    total = 0.0
    for i in range(s.shape[0]):
        ps = torch.softmax(text @ s[i] / temperature, 0)
        pt = torch.softmax(text @ t[i] / temperature, 0)
        total += float((pt * (pt.log() - ps.log())).sum())
    loss = total / s.shape[0]
    if weight and own is not None:
        cos = [float(s[i] @ text[own[i]]) for i in range(s.shape[0]) if own[i] >= 0]
        loss += weight * sum(1 - c for c in cos) / len(cos)
    return loss


def ref_siglip(s, t, scale=10.0, bias=-10.0):
    s, t = _unit(s.double()), _unit(t.double())
    total = 0.0
    for i in range(s.shape[0]):
        for j in range(t.shape[0]):
            z = (1.0 if i == j else -1.0) * (scale * float(s[i] @ t[j]) + bias)
            total += -math.log(1.0 / (1.0 + math.exp(-z)))
    return total / s.shape[0]


@pytest.fixture
def emb():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g), torch.randn(9, 16, generator=g))


@pytest.mark.parametrize("temperature,weight", [(0.01, 0.0), (0.1, 0.5)])
def test_text_kd_matches_reference(emb, temperature, weight):
    s, t, text = emb
    own = torch.tensor([0, 3, -1, 8, 2, -1])
    got = LOSSES["text_kd"](s, t, text, own, LossParams(temperature=temperature, caption_weight=weight))
    assert float(got) == pytest.approx(ref_text_kd(s, t, text, own, temperature, weight), rel=1e-4, abs=1e-6)


def test_siglip_and_cosine_match_reference(emb):
    s, t, _ = emb
    assert float(LOSSES["siglip"](s, t)) == pytest.approx(ref_siglip(s, t), rel=1e-5)
    ref_cos = float((1 - (_unit(s.double()) * _unit(t.double())).sum(-1)).mean())
    assert float(LOSSES["cosine"](s, t)) == pytest.approx(ref_cos, rel=1e-5, abs=1e-7)


def test_losses_are_minimal_when_student_equals_teacher(emb):
    s, t, text = emb
    assert float(LOSSES["text_kd"](3 * t, t, text)) == pytest.approx(0.0, abs=1e-5)  # scale-free
    assert float(LOSSES["cosine"](t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(LOSSES["siglip"](t, t)) < float(LOSSES["siglip"](s, t))


def test_gradients_reach_the_student_only(emb):
    s, t, text = (x.clone().requires_grad_(True) for x in emb)
    for name, fn in LOSSES.items():
        for x in (s, t, text):
            x.grad = None
        fn(s, t, text, None, LossParams(temperature=0.1)).backward()
        assert s.grad is not None and s.grad.abs().sum() > 0, name
        assert t.grad is None or t.grad.abs().sum() == 0, name
        assert text.grad is None or text.grad.abs().sum() == 0, name


def test_text_kd_without_text_fails_clearly(emb):
    s, t, _ = emb
    with pytest.raises(ValueError, match="text embeddings"):
        LOSSES["text_kd"](s, t, None)
