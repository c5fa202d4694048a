"""Shared, session-scoped tiny models (random weights; offline, CPU)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI (runtime.threads): no spinning on shared cores

import pytest  # noqa: E402
import torch  # noqa: E402

TEXT_CFG = dict(width=64, layers=1, heads=4, context_length=32)
TINY_RN = dict(embed_dim=64, vision_cfg=dict(layers=[1, 1, 1, 1], width=16, image_size=64, head_width=16),
               text_cfg=TEXT_CFG)
TINY_VIT = dict(embed_dim=64, vision_cfg=dict(width=64, layers=2, patch_size=8, image_size=32, head_width=16),
                text_cfg=TEXT_CFG)


def make_bcos_friendly(model: torch.nn.Module, seed: int = 0, row_norm: float = 3.0) -> torch.nn.Module:
    """Give a randomly initialised tower non-default BatchNorm statistics and weight rows of a fixed norm.

    open_clip's random init zeroes bn3 and uses small weights: a B=2 tower of it outputs ~0. Pretrained
    and trained towers do not have that problem; tests use this to stand in for them.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.visual.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
            elif isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                w = mod.weight
                w.mul_(row_norm / w.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, *[1] * (w.dim() - 1)))
    return model


def _tiny(cfg: dict, seed: int):
    from bcos_clip import load_clip

    torch.manual_seed(seed)
    model, preprocess, tokenizer = load_clip("RN50" if "head_width" in cfg["vision_cfg"] and isinstance(
        cfg["vision_cfg"].get("layers"), list) else "ViT-B-16", **cfg)
    return make_bcos_friendly(model, seed), preprocess, tokenizer


@pytest.fixture(scope="session")
def tiny_rn():
    """(open_clip ModifiedResNet CLIP, preprocess, tokenizer): layers [1,1,1,1], width 16, 64 px."""
    return _tiny(TINY_RN, 0)


@pytest.fixture(scope="session")
def tiny_vit():
    """(open_clip ViT CLIP, preprocess, tokenizer): width 64, 2 layers, patch 8, 32 px."""
    return _tiny(TINY_VIT, 1)


@pytest.fixture(scope="session")
def tiny_rn_bcos(tiny_rn):
    from bcos_clip import bcosify

    return bcosify(tiny_rn[0], b=2.0, bias=False)


@pytest.fixture(scope="session")
def tiny_vit_bcos(tiny_vit):
    from bcos_clip import bcosify

    return bcosify(tiny_vit[0], b=2.0, bias=False)
