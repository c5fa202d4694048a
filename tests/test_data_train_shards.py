"""The training stream: spec expansion, sample counts, determinism, resume, DDP splits, bad data."""
from __future__ import annotations

import io
import json
import logging
import random
import tarfile
from pathlib import Path

import pytest
import torch

from bcos_clip.data.stream.loader import (BadDataCounter, StreamSpec, clamp_workers, decode_batch,
                                         first_sample_fields, make_epoch_loader)
from bcos_clip.data.stream.sources import expand_train_spec, resolve_num_samples, stats_path
from bcos_clip.data.stream.transforms import CropSpec, decode_rgb, random_resized_crop_box, train_augment
from tests._train_data import image_bytes, write_imagenet, write_img2dataset

SPEC = StreamSpec(batch_size=4, crop=CropSpec(32), seed=3, shuffle_buffer=8)


@pytest.fixture(scope="module")
def cc3m(tmp_path_factory) -> str:
    return write_img2dataset(tmp_path_factory.mktemp("cc3m"), n_shards=4, per_shard=6)


def _keys(shardset, epoch=0, batches=6, start=0, workers=0, spec=SPEC):
    loader = make_epoch_loader(shardset, spec, epoch, batches, start, workers)
    return [b["keys"] for b in loader]


def test_img2dataset_layout_counts_and_fields(cc3m):
    root = Path(cc3m.split("{")[0])
    assert stats_path(str(root / "00003.tar")) == str(root / "00003_stats.json")
    shardset = expand_train_spec(cc3m)
    assert len(shardset.shards) == 4 and shardset.num_samples == 24
    assert expand_train_spec(str(root)).shards == shardset.shards  # a folder of tars
    assert first_sample_fields(shardset) == ["jpg", "json", "txt"]
    batch = next(iter(make_epoch_loader(shardset, SPEC, 0, 1)))
    assert batch["images"].shape == (4, 3, 32, 32) and batch["images"].dtype == torch.uint8
    assert all(c.startswith("a ") for c in batch["captions"]) and batch["labels"].tolist() == [-1] * 4


def test_joined_sources_imagenet_without_stats_and_image_folder(tmp_path, cc3m):
    imagenet = write_imagenet(tmp_path / "in", n_shards=2, per_shard=5)
    folder = tmp_path / "folder"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            (folder / cls / f"{i}.png").write_bytes(image_bytes(i, fmt="PNG"))
    (folder / "dog" / "0.txt").write_text("a dog on grass")
    shardset = expand_train_spec(f"{cc3m}::{imagenet}::{folder}", folder_chunk_size=4)
    assert len(shardset.shards) == 4 + 2 + 2
    assert shardset.num_samples == 24 + 10 + 6  # stats, tar headers, file count
    assert resolve_num_samples(shardset, 7) == 7
    only_in = expand_train_spec(imagenet)
    labels = torch.cat([b["labels"] for b in make_epoch_loader(only_in, SPEC, 0, 2)])
    assert set(labels.tolist()) <= {0, 1, 2, 3} and first_sample_fields(only_in) == ["cls", "jpg"]
    in_folder = expand_train_spec(str(folder), folder_chunk_size=4)
    batches = list(make_epoch_loader(in_folder, StreamSpec(6, CropSpec(32), shuffle_buffer=1), 0, 1))
    got = dict(zip(batches[0]["keys"], zip(batches[0]["labels"].tolist(), batches[0]["captions"])))
    assert got[f"dog/0"] == (1, "a dog on grass") and got["cat/2"] == (0, None)


def test_bad_specs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="do not exist"):
        expand_train_spec(str(tmp_path / "{00000..00002}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no tar shards and no images"):
        expand_train_spec(str(tmp_path / "empty"))
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 3}))
    (tmp_path / "00000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="successes"):
        expand_train_spec(str(tmp_path / "00000.tar"))


def test_stream_is_a_function_of_seed_and_epoch(cc3m):
    shardset = expand_train_spec(cc3m)
    first = _keys(shardset)
    assert first == _keys(shardset)
    assert first != _keys(shardset, epoch=1)
    assert first != _keys(shardset, spec=StreamSpec(4, CropSpec(32), seed=4, shuffle_buffer=8))
    flat = [k for b in first for k in b]
    assert len(set(flat)) == 24  # one epoch of 6 batches x 4 = every sample once


def test_stream_does_not_depend_on_where_the_shards_lie(cc3m, tmp_path):
    """The same shards copied to another folder give the same batches, augmentations included (the crop
    seed once held the shard's whole path, so a demo in another output folder trained on other crops)."""
    import shutil

    moved = tmp_path / "elsewhere" / "deeper"
    source = Path(cc3m.split("{")[0])  # the folder of the shards
    shutil.copytree(source, moved)
    spec = cc3m.replace(str(source), str(moved))
    assert spec != cc3m
    here, there = (list(make_epoch_loader(expand_train_spec(s), SPEC, 0, 3, 0, 0)) for s in (cc3m, spec))
    for a, b in zip(here, there):
        assert a["keys"] == b["keys"] and torch.equal(a["images"], b["images"])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_skips_exactly_the_consumed_batches(cc3m, workers):
    shardset = expand_train_spec(cc3m)
    full = list(make_epoch_loader(shardset, SPEC, 1, 6, 0, workers))
    tail = list(make_epoch_loader(shardset, SPEC, 1, 6, 3, workers))
    assert [b["keys"] for b in tail] == [b["keys"] for b in full[3:]]
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(tail, full[3:]))


def test_ranks_get_disjoint_shards_and_equal_batches(tmp_path, monkeypatch):
    spec = write_img2dataset(tmp_path, n_shards=5, per_shard=6)  # 3 + 2 shards: uneven on purpose
    shardset = expand_train_spec(spec)
    seen, counts = [], []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        batches = list(make_epoch_loader(shardset, SPEC, 0, 5))
        counts.append(len(batches))
        seen.append({u for b in batches for u in b["urls"]})
    assert counts == [5, 5]
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_resampled_mode_draws_with_replacement(cc3m):
    shardset = expand_train_spec(cc3m)
    spec = StreamSpec(4, CropSpec(32), seed=1, shuffle_buffer=1, resampled=True)
    keys = [k for b in make_epoch_loader(shardset, spec, 0, 12) for k in b["keys"]]
    assert len(keys) == 48 and len(set(keys)) < 48  # 48 draws from 24 samples repeat some


def test_workers_clamped_to_shards_per_rank(caplog):
    with caplog.at_level(logging.WARNING):
        assert clamp_workers(8, num_shards=6, world_size=2, resampled=False) == 3
    assert "clamped to 3" in caplog.text
    assert clamp_workers(8, 6, 2, resampled=True) == 8
    with pytest.raises(ValueError, match="at least one shard"):
        clamp_workers(2, num_shards=1, world_size=2, resampled=False)


def _tar_with(path: Path, members: dict) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_data_is_skipped_and_counted(tmp_path):
    good = image_bytes(1)
    _tar_with(tmp_path / "00000.tar", {"a.jpg": good, "a.txt": b"ok", "b.jpg": b"\xff\xd8not a jpeg",
                                       "b.txt": b"corrupt", "c.txt": b"no image", "d.jpg": good[: len(good) // 3],
                                       "e.jpg": good})
    whole = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "00001.tar").write_bytes(whole[: len(whole) - 700])  # truncated inside e.jpg
    (tmp_path / "00002.tar").write_bytes(b"")  # empty shard
    shardset = expand_train_spec(str(tmp_path / "{00000..00002}.tar"), count_missing=False)
    spec = StreamSpec(batch_size=16, crop=CropSpec(32), shuffle_buffer=1)
    batch = next(iter(make_epoch_loader(shardset, spec, 0, 1)))
    bad = batch["bad"]
    assert bad["no_image"] >= 2 and bad["corrupt_image"] >= 4  # b, d in both copies of the shard
    assert bad["unreadable_shard_data"] >= 2  # the truncated and the empty shard
    assert set(batch["keys"]) <= {"a", "e"} and batch["images"].shape[0] == len(batch["keys"]) >= 3


def test_shards_with_no_readable_sample_raise_instead_of_hanging(tmp_path):
    for i in range(2):
        (tmp_path / f"{i:05d}.tar").write_bytes(b"this is not a tar file" * 10)
    shardset = expand_train_spec(str(tmp_path / "{00000..00001}.tar"), count_missing=False)
    with pytest.raises(RuntimeError, match="no readable sample"):
        list(make_epoch_loader(shardset, SPEC, 0, 2))


def test_augment_matches_randomresizedcrop_contract():
    rng = random.Random(0)
    spec = CropSpec(24, scale=(0.3, 1.0))
    for _ in range(50):
        w, h = rng.randint(20, 90), rng.randint(20, 90)
        left, top, cw, ch = random_resized_crop_box(w, h, spec, rng)
        assert 0 <= left and 0 <= top and left + cw <= w and top + ch <= h and cw > 0 and ch > 0
    img = decode_rgb(image_bytes(5))
    a = train_augment(img, spec, random.Random("k"))
    assert a.shape == (3, 24, 24) and a.dtype == torch.uint8
    assert torch.equal(a, train_augment(img, spec, random.Random("k")))


def test_decode_batch_without_images_returns_empty_batch():
    bad = BadDataCounter()
    out = decode_batch([{"__key__": "x", "__url__": "u", "__pass__": 0, "txt": b"t"}], SPEC, 0, bad)
    assert out["images"].shape == (0, 3, 32, 32) and out["bad"] == {"no_image": 1} and out["raw"] == 1
