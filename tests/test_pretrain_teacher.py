"""Teacher pre-training on the shapes world: runs, learns, saves a loadable checkpoint, caches."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest
import torch
import webdataset as wds

from bcos_clip import load_clip
from bcos_clip.data.shapes_writer import WorldPaths, build_world
from bcos_clip.models import PlainCLIP, encode_prompts
from bcos_clip.train.pretrain_teacher import config_path, contrastive_loss, pretrain_teacher


def zero_shot_accuracy(model: PlainCLIP, folder: Path, split: str = "test") -> float:
    """Top-1 of the mean-of-templates zero-shot classifier on a CLIP_benchmark wds folder.

    A private sanity check for these tests (the real evaluation lives in bcos_clip.evaluation).
    """
    classnames = (folder / "classnames.txt").read_text().splitlines()
    templates = (folder / "zeroshot_classification_templates.txt").read_text().splitlines()
    n = int((folder / split / "nshards.txt").read_text())
    samples = list(wds.WebDataset([str(folder / split / f"{i}.tar") for i in range(n)],
                                  shardshuffle=False).decode("torchrgb"))
    images = torch.stack([s["webp"] for s in samples])
    labels = torch.tensor([int(s["cls"]) for s in samples])
    with torch.no_grad():
        weights = encode_prompts(model, classnames, [t.replace("{c}", "{}") for t in templates])
        feats = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    return (feats @ weights.t()).argmax(1).eq(labels).float().mean().item()


def teacher_accuracies(world: WorldPaths, ckpt: Path) -> Dict[str, float]:
    meta = ckpt.with_suffix(".json")
    model, _, tok = load_clip(str(meta), pretrained=str(ckpt))
    plain = PlainCLIP.from_clip(model, tok)
    return {name: zero_shot_accuracy(plain, world.task_dir(name)) for name in world.tasks}


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


def test_pretrain_quick_learns_saves_and_caches(small_world, tmp_path):
    ckpt = pretrain_teacher(small_world, tmp_path, steps=40, batch_size=64, seed=0)
    meta_path = ckpt.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    losses = [h["loss"] for h in meta["teacher"]["log"]]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8  # the contrastive loss falls
    # Loadable from the JSON beside it, and from the shipped config; weights identical to the saved ones.
    model, _, tok = load_clip(str(meta_path), pretrained=str(ckpt))
    model2, _, _ = load_clip(str(config_path("rn")), pretrained=str(ckpt))
    saved = torch.load(ckpt, map_location="cpu")
    for name, value in model2.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert tok("a red circle").shape == (1, 32)
    # The second call reuses the checkpoint; other arguments train again.
    mtime = ckpt.stat().st_mtime_ns
    assert pretrain_teacher(small_world, tmp_path, steps=40, batch_size=64, seed=0) == ckpt
    assert ckpt.stat().st_mtime_ns == mtime
    accs = teacher_accuracies(small_world, ckpt)
    assert set(accs) == set(small_world.tasks)
    assert accs["shapes_natural"] > 2 / 16  # 40 steps already learn colour (~28%; chance 6.25%)


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
