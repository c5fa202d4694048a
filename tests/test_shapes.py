"""The shapes world: determinism, captions, on-disk formats (img2dataset, CLIP_benchmark wds/), caching."""
from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from bcos_clip.data.shapes.scene import ShapeObject
from bcos_clip.data.shapes.world import (COLORS, COUNT_WORDS, DEMO_TASKS, QUADRANTS, SHAPES, TASK_BUILDERS,
                                   position_phrase, render_scene, sample_task_scene, task_classnames,
                                   task_templates, train_sample)
from bcos_clip.data.shapes.writer import build_world

SMALL = dict(n_train=90, n_eval_per_class=3, samples_per_shard=40, eval_shard_size=20, n_retrieval=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world") / "w", workers=2, **SMALL)


def _obj(cx: float, cy: float, r: float = 5.0) -> ShapeObject:
    return ShapeObject("red", "circle", cx, cy, r, 0.0, (200, 30, 30))


def test_samples_are_deterministic_and_seeded():
    s1, c1 = train_sample(3, 17)
    s2, c2 = train_sample(3, 17)
    assert c1 == c2 and s1 == s2
    assert np.array_equal(np.asarray(render_scene(s1)), np.asarray(render_scene(s2)))
    assert train_sample(4, 17)[0] != s1  # another seed, another scene
    assert len({train_sample(3, i)[1] for i in range(18, 30)}) > 6
    img = render_scene(s1)
    assert img.size == (64, 64) and img.mode == "RGB"
    assert render_scene(train_sample(3, 17, size=96)[0]).size == (96, 96)


def test_captions_name_color_shape_count_and_position():
    color_shape = re.compile(rf"({'|'.join(COLORS)}) ({'|'.join(SHAPES)})s?\b")
    n_single, n_count, n_pos = 0, 0, 0
    for i in range(400):
        scene, caption = train_sample(0, i)
        n = len(scene.objects)
        assert 1 <= n <= 4
        names_count = re.search(rf"\b{COUNT_WORDS[n - 1]}\b", caption) is not None
        assert color_shape.search(caption) or names_count, caption
        # every colour + shape named is one that is in the scene
        for m in color_shape.finditer(caption):
            assert any(o.color == m.group(1) and o.shape == m.group(2) for o in scene.objects), caption
        n_single += n == 1
        n_count += n > 1 and names_count
        if n == 1 and "in the top left" in caption:
            assert scene.objects[0].cx < 32 and scene.objects[0].cy < 32
            n_pos += 1
    assert 0.4 < n_single / 400 < 0.6  # a roughly even mix of one- and multi-object scenes
    assert n_count > 0.3 * (400 - n_single)  # multi-object captions often name the count
    assert n_pos > 10


def test_position_phrase():
    assert position_phrase([_obj(12, 12)], 64) == "in the top left"
    assert position_phrase([_obj(50, 50)], 64) == "in the bottom right"
    assert position_phrase([_obj(32, 32)], 64) == "in the center"
    assert position_phrase([_obj(10, 10), _obj(12, 54)], 64) == "on the left"
    assert position_phrase([_obj(10, 52), _obj(54, 54)], 64) == "at the bottom"
    assert position_phrase([_obj(10, 10), _obj(54, 54)], 64) is None


def test_task_scenes_match_their_class():
    assert set(DEMO_TASKS) == set(TASK_BUILDERS)
    assert set(DEMO_TASKS.values()) == {"natural", "specialized", "structured"}
    assert len(task_classnames("shapes_natural")) == 16
    for i in range(24):
        scene, k = sample_task_scene("shapes_count", 0, "test", i)
        assert len(scene.objects) == k + 1
        scene, k = sample_task_scene("shapes_position", 0, "test", i)
        o, quadrant = scene.objects[0], QUADRANTS[k]
        assert (o.cx < 32) == ("left" in quadrant) and (o.cy < 32) == ("top" in quadrant)
        scene, k = sample_task_scene("shapes_sketch", 0, "train", i)
        assert scene.objects[0].outline and scene.objects[0].label == task_classnames("shapes_sketch")[k]
    assert all("{c}" in t for name in DEMO_TASKS for t in task_templates(name))
    with pytest.raises(KeyError, match="unknown shapes task"):
        task_classnames("shapes_nope")


def test_train_shards_img2dataset_layout(world):
    train = world.root / "train"
    tars = world.train_shard_paths()
    assert [p.name for p in tars] == ["00000.tar", "00001.tar", "00002.tar"]
    assert world.train_shards == str(train / "{00000..00002}.tar")
    for shard, tar in enumerate(tars):
        stats = json.loads((train / f"{shard:05d}_stats.json").read_text())
        assert stats["successes"] == stats["count"] == min(40, 90 - 40 * shard)
        assert stats["failed_to_download"] == 0
    names = tarfile.open(tars[1]).getnames()
    assert sorted(names[:3]) == ["000000040.jpg", "000000040.json", "000000040.txt"]
    samples = list(wds.WebDataset(world.train_shards, shardshuffle=False).decode("pil"))
    assert len(samples) == 90
    s = samples[41]
    assert s["__key__"] == "000000041" and s["jpg"].size == (64, 64)
    assert s["json"]["caption"] == s["txt"] and s["json"]["status"] == "success"
    assert s["json"]["key"] == s["__key__"] and s["json"]["shapes"]["count"] >= 1
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(train / "00002.parquet")
    assert table.num_rows == 10 and {"url", "caption", "key", "status"} <= set(table.column_names)


def test_wds_task_folders(world):
    assert world.tasks == tuple(DEMO_TASKS)
    for name in world.tasks:
        folder = world.task_dir(name)
        classes = (folder / "classnames.txt").read_text().splitlines()
        assert classes == list(task_classnames(name))
        templates = (folder / "zeroshot_classification_templates.txt").read_text().splitlines()
        assert templates and all("{c}" in t for t in templates)
        for split in ("train", "test"):
            n = int((folder / split / "nshards.txt").read_text())
            files = [folder / split / f"{i}.tar" for i in range(n)]
            assert all(f.exists() for f in files)
            samples = list(wds.WebDataset([str(f) for f in files], shardshuffle=False).decode("pil"))
            assert len(samples) == 3 * len(classes)
            assert {"webp", "cls"} <= set(samples[0])
            counts = Counter(int(s["cls"]) for s in samples)
            assert counts == Counter({k: 3 for k in range(len(classes))})
    ret = list(wds.WebDataset(str(world.task_dir("shapes_retrieval") / "test" / "0.tar"),
                              shardshuffle=False).decode("pil"))
    assert len(ret) == 8 and all(s["txt"].strip() and s["webp"].size == (64, 64) for s in ret)


def test_build_world_is_cached_deterministic_and_rebuilds(world, tmp_path):
    marker = world.root / "world.json"
    before = marker.stat().st_mtime_ns
    again = build_world(world.root, workers=2, **SMALL)
    assert again == world and marker.stat().st_mtime_ns == before  # reused, nothing rewritten
    serial = build_world(tmp_path / "serial", workers=1, **SMALL)
    for a, b in zip(world.train_shard_paths(), serial.train_shard_paths()):
        assert a.read_bytes() == b.read_bytes()  # bytes do not depend on the number of workers
    a = world.task_dir("shapes_count") / "test" / "0.tar"
    assert a.read_bytes() == (serial.task_dir("shapes_count") / "test" / "0.tar").read_bytes()
    changed = build_world(tmp_path / "serial", workers=1, **{**SMALL, "n_train": 50})
    assert len(changed.train_shard_paths()) == 2
    assert json.loads((tmp_path / "serial" / "world.json").read_text())["args"]["n_train"] == 50


def test_build_world_bad_input(tmp_path):
    with pytest.raises(ValueError, match="n_train"):
        build_world(tmp_path / "a", n_train=0)
    (tmp_path / "b" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a shapes world"):
        build_world(tmp_path / "b", **SMALL)
    with pytest.raises(KeyError, match="unknown shapes task"):
        build_world(tmp_path / "c", workers=1, **SMALL).task_dir("imagenet1k")
