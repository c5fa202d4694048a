"""In-process distillation of a tiny RN teacher: every loss, data layouts, overfit, skips, checks."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import bcos_clip
from bcos_clip.runtime.hashing import text_tower_digest
from bcos_clip.runtime.precision import resolve_precision
from bcos_clip.runtime.runfiles import read_metrics
from bcos_clip.train import LOSSES, TrainConfig, train
from bcos_clip.train.losses import LossParams
from bcos_clip.train.task import DistillTask
from bcos_clip.train.text_targets import CaptionCache, TextTargets
from tests._train_data import (image_bytes, write_imagenet, write_img2dataset, write_tiny_teacher,
                               write_wds_classification)


@pytest.fixture(scope="module")
def teacher_files(tiny_rn, tmp_path_factory):
    return write_tiny_teacher(tmp_path_factory.mktemp("teacher"), model=tiny_rn[0])


@pytest.fixture(scope="module")
def cc3m(tmp_path_factory):
    return write_img2dataset(tmp_path_factory.mktemp("cc3m"), n_shards=2, per_shard=8)


def _cfg(teacher_files, data, output, **kw) -> TrainConfig:
    base = dict(model=teacher_files[0], pretrained=teacher_files[1], train_data=data, output=str(output),
                steps=3, batch_size=4, workers=0, log_every=1, save_every=100, lr=1e-3, seed=0)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("loss", ["text_kd", "siglip", "cosine"])
def test_each_loss_trains_and_writes_a_loadable_checkpoint(teacher_files, cc3m, tmp_path, loss):
    summary = train(_cfg(teacher_files, cc3m, tmp_path, loss=loss, caption_weight=0.5 if loss == "text_kd" else 0))
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["loss"] >= 0 for r in records)
    assert summary["steps"] == 3 and summary["ranks"][0]["counters"] == {}
    student = bcos_clip.load(tmp_path / "checkpoints" / "latest")
    assert isinstance(student, bcos_clip.BcosCLIP) and (tmp_path / "train_config.json").is_file()
    initial = bcos_clip.bcosify(bcos_clip.load_clip(*teacher_files)[0])
    changed = [not torch.equal(a, b) for a, b in zip(student.visual.parameters(), initial.visual.parameters())]
    assert any(changed)


def test_imagenet_shards_without_captions_use_class_prompts(teacher_files, tmp_path, caplog):
    data = write_imagenet(tmp_path / "in", n_shards=2, per_shard=4)
    names = tmp_path / "classnames.txt"
    names.write_text("red\ngreen\nblue\nyellow\n")
    with caplog.at_level(logging.WARNING):
        train(_cfg(teacher_files, data, tmp_path / "run", steps=2, classnames=str(names), templates="simple",
                   caption_weight=1.0, precision="amp_bf16", accum_freq=2))
    assert "no captions" in caplog.text and len(read_metrics(tmp_path / "run")) == 2
    with pytest.raises(ValueError, match="has no .txt caption"):
        train(_cfg(teacher_files, data, tmp_path / "run2", text_source="captions"))


def test_image_folder_and_zeroshot_check(teacher_files, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}.jpg").write_bytes(image_bytes(i))
        (folder / f"{i}.txt").write_text(f"picture {i}")
    wds_dir = write_wds_classification(tmp_path / "wds_check")
    train(_cfg(teacher_files, str(folder), tmp_path / "run", steps=2, zeroshot_data=wds_dir, zeroshot_every=2,
               zeroshot_samples=8, precision="bf16"))
    checks = [r for r in read_metrics(tmp_path / "run") if "zeroshot_top1" in r]
    assert len(checks) == 1 and 0.0 <= checks[0]["zeroshot_top1"] <= 1.0 and checks[0]["zeroshot_n"] == 8


def test_nonfinite_losses_are_skipped_then_stop_with_last_checkpoint_intact(teacher_files, cc3m, tmp_path,
                                                                          monkeypatch):
    calls = {"n": 0}
    real = LOSSES["cosine"]

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] >= 3 else out

    monkeypatch.setitem(LOSSES, "cosine", sometimes_nan)
    with pytest.raises(RuntimeError, match=r"skipped steps exceed --max-bad-steps 2.*intact: .*step_00000004"):
        train(_cfg(teacher_files, cc3m, tmp_path, loss="cosine", steps=8, save_every=2, max_bad_steps=2))
    latest = tmp_path / "checkpoints" / "latest"
    assert latest.resolve().name == "step_00000004"  # skipped steps 3-4 leave the weights as they were
    bcos_clip.load(latest)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["nonfinite_loss"] == 2 and records[-1]["skipped_steps"] == 2


def test_overfit_on_a_fixed_batch(tiny_rn):
    """On one fixed batch the distillation loss falls (every loss)."""
    clip, _, tokenizer = tiny_rn
    teacher = bcos_clip.PlainCLIP.from_clip(clip, tokenizer).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 64, generator=g)
    captions = [f"a {c} square" for c in ("red", "green", "blue", "yellow")]
    precision = resolve_precision("fp32", torch.device("cpu"))
    for name in LOSSES:
        student = bcos_clip.bcosify(clip, b=2.0, bias=False).train()
        targets = TextTargets(student, "captions", torch.device("cpu"))
        task = DistillTask(teacher, student, student.visual, name, LossParams(temperature=0.05), precision,
                           targets)
        opt = torch.optim.Adam(student.visual.parameters(), lr=3e-3)
        losses = []
        for _ in range(4):
            loss = task.batch_loss(images, captions, torch.full((4,), -1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.7 * losses[0], (name, losses)


def test_teacher_and_student_see_the_same_crop(tiny_rn, tiny_rn_bcos):
    clip, _, tokenizer = tiny_rn
    teacher = bcos_clip.PlainCLIP.from_clip(clip, tokenizer).eval()
    student = tiny_rn_bcos.eval()
    task = DistillTask(teacher, student, student.visual, "cosine", LossParams(),
                       resolve_precision("fp32", torch.device("cpu")), None)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean = torch.tensor(clip.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(clip.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)
        expected = LOSSES["cosine"](student.visual(torch.cat([images, 1 - images], 1)),
                                    clip.encode_image((images - mean) / std))
        assert float(task.loss(images, None, None)) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)


def test_caption_cache_round_trip_and_model_check(tiny_rn_bcos, tmp_path):
    fp = text_tower_digest(tiny_rn_bcos)
    cache = CaptionCache(str(tmp_path), fp)
    targets = TextTargets(tiny_rn_bcos, "captions", torch.device("cpu"), cache=cache)
    text, own = targets.for_batch(["a dog", None, "a cat", "a dog"], torch.full((4,), -1))
    assert text.shape == (2, 64) and own.tolist() == [1, -1, 0, 1]
    cache.flush("t")
    again = CaptionCache(str(tmp_path), fp)
    assert len(again.table) == 2
    cached = TextTargets(tiny_rn_bcos, "captions", torch.device("cpu"), cache=again)
    assert torch.allclose(cached.for_batch(["a cat", "a dog"], torch.full((2,), -1))[0], text, atol=1e-3)
    with pytest.raises(ValueError, match="another text tower"):
        CaptionCache(str(tmp_path), "different")
    assert targets.for_batch([None, None], torch.full((2,), -1))[0] is None
