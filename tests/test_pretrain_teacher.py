"""Teacher pre-training on the shapes world: runs, learns, saves a loadable checkpoint, caches."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest
import torch

from bcos_clip import load_clip
from bcos_clip.apps.demo.teacher import config_path, contrastive_loss, param_groups, pretrain_teacher
from bcos_clip.data.shapes.writer import WorldPaths, build_world
from bcos_clip.evaluation import EvalConfig, ModelHandle, evaluate
from bcos_clip.models import PlainCLIP


def teacher_accuracies(world: WorldPaths, ckpt: Path, out: Path) -> Dict[str, float]:
    """Zero-shot top-1 of the saved teacher on every task of the world, through bcos_clip.evaluation."""
    meta = ckpt.with_suffix(".json")
    model, _, tok = load_clip(str(meta), pretrained=str(ckpt))
    handle = ModelHandle(PlainCLIP.from_clip(model, tok).eval(), str(meta), str(ckpt))
    cfg = EvalConfig(output=str(out), dataset_root=str(world.wds_root / "{dataset}"))
    return {name: evaluate(handle, f"wds/{name}", "zeroshot_classification", cfg)["metrics"]["acc1"]
            for name in world.tasks}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> WorldPaths:
    return build_world(tmp_path_factory.mktemp("teacher") / "world", n_train=1024, n_eval_per_class=4,
                       samples_per_shard=512, n_retrieval=4)


def test_contrastive_loss_is_symmetric_infonce():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * a @ b.t()
    manual = -(logits.diag() - logits.logsumexp(1)).mean() / 2 - (logits.diag() - logits.logsumexp(0)).mean() / 2
    assert torch.allclose(contrastive_loss(a, b, scale), manual, atol=1e-5)
    assert contrastive_loss(a, a, torch.tensor(100.0)) < 0.01  # perfect pairs


def test_pretrain_saves_a_loadable_checkpoint_and_caches(small_world, tmp_path):
    ckpt = pretrain_teacher(small_world, tmp_path, steps=3, batch_size=16, seed=0)
    meta_path = ckpt.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    assert [h["step"] for h in meta["teacher"]["log"]] == [0, 1, 2]
    # Loadable from the JSON beside it, and from the shipped config; weights identical to the saved ones.
    model, _, tok = load_clip(str(meta_path), pretrained=str(ckpt))
    model2, _, _ = load_clip(str(config_path("rn")), pretrained=str(ckpt))
    saved = torch.load(ckpt, map_location="cpu")
    for name, value in model2.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert tok("a red circle").shape == (1, 32)
    # The second call reuses the checkpoint; other arguments train again.
    mtime = ckpt.stat().st_mtime_ns
    assert pretrain_teacher(small_world, tmp_path, steps=3, batch_size=16, seed=0) == ckpt
    assert ckpt.stat().st_mtime_ns == mtime
    pretrain_teacher(small_world, tmp_path, steps=2, batch_size=16, seed=0)
    assert ckpt.stat().st_mtime_ns != mtime


@pytest.mark.slow
def test_pretrain_learns(small_world, tmp_path):
    ckpt = pretrain_teacher(small_world, tmp_path, steps=40, batch_size=64, seed=0)
    losses = [h["loss"] for h in json.loads(ckpt.with_suffix(".json").read_text())["teacher"]["log"]]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8  # the contrastive loss falls
    accs = teacher_accuracies(small_world, ckpt, tmp_path / "eval")
    assert set(accs) == set(small_world.tasks)
    assert accs["shapes_natural"] > 2 / 16  # 40 steps already learn colour (~28%; chance 6.25%)


def test_weight_decay_groups_by_shape_and_module_type(tiny_vit):
    model = tiny_vit[0]
    decay, no_decay = (set(map(id, g["params"])) for g in param_groups(model, 0.1))
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                assert id(p) not in decay | no_decay, name
            elif p.ndim >= 2 and not isinstance(module, torch.nn.LayerNorm):
                assert id(p) in decay, name  # linear / conv / attention projections, embeddings, proj
            else:
                assert id(p) in no_decay, name  # biases, LayerNorm gains, class token, logit scale
    ln2d = torch.nn.LayerNorm((4, 4))  # a 2-D gain is still a gain
    assert [len(g["params"]) for g in param_groups(ln2d, 0.1)] == [0, 2]


def test_pretrain_bad_input(small_world, tmp_path):
    with pytest.raises(ValueError, match="unknown teacher arch"):
        pretrain_teacher(small_world, tmp_path, arch="convnext")
    with pytest.raises(ValueError, match="steps"):
        pretrain_teacher(small_world, tmp_path, steps=0)
    bogus = WorldPaths(root=tmp_path / "none", train_shards="x", n_train=0, wds_root=tmp_path, tasks=(),
                       retrieval_task="r", image_size=64, seed=0, groups=())
    with pytest.raises(FileNotFoundError, match="build_world"):
        pretrain_teacher(bogus, tmp_path)


def test_teacher_vision_overrides_build_a_conv_stem_vit_and_key_the_cache(small_world, tmp_path):
    from bcos_clip import nn as bnn

    ckpt = pretrain_teacher(small_world, tmp_path, arch="vit", steps=5, batch_size=16, seed=0, warmup=1,
                            vision={"conv_stem": [8, 16, 32]})
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["model_cfg"]["vision_cfg"]["conv_stem"] == [8, 16, 32]
    assert meta["teacher"]["key"]["config"]["warmup"] == 1
    model, _, _ = load_clip(str(ckpt.with_suffix(".json")), pretrained=str(ckpt))
    assert isinstance(model.visual.conv1, bnn.ConvStem)
    mtime = ckpt.stat().st_mtime_ns
    pretrain_teacher(small_world, tmp_path, arch="vit", steps=5, batch_size=16, seed=0, warmup=1,
                     vision={"conv_stem": [8, 16, 16]})  # another architecture: trained again
    assert ckpt.stat().st_mtime_ns != mtime
    with pytest.raises(KeyError, match="patch_szie"):
        pretrain_teacher(small_world, tmp_path, arch="vit", steps=3, vision={"patch_szie": 4})
    with pytest.raises(ValueError, match="warmup"):
        pretrain_teacher(small_world, tmp_path, arch="vit", steps=30, warmup=-1)
