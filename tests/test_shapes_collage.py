"""Collages in the shapes world: 2 x 2 grids of small one-object scenes, drawn for a share of training samples."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from bcos_clip.data.shapes.collage import GRID, Collage, render_collage
from bcos_clip.data.shapes.scene import COLORS, QUADRANTS, sample_rng
from bcos_clip.data.shapes.world import caption_collage, render_sample, sample_collage, train_sample
from bcos_clip.data.shapes.writer import build_world

SMALL = dict(n_train=60, n_eval_per_class=2, samples_per_shard=30, eval_shard_size=20, n_retrieval=4)


def test_collage_share_draws_collages_and_keeps_every_other_sample():
    plain = [train_sample(0, i) for i in range(300)]
    mixed = [train_sample(0, i, collage_share=0.25) for i in range(300)]
    kinds = [isinstance(s, Collage) for s, _ in mixed]
    assert 45 <= sum(kinds) <= 105  # about a quarter
    for (s0, c0), (s1, c1), is_collage in zip(plain, mixed, kinds):
        if not is_collage:  # the scene (and caption) it was without collages
            assert s0 == s1 and c0 == c1
    assert train_sample(0, 5, collage_share=0.25) == mixed[5]  # deterministic
    assert all(isinstance(s, Collage) for s, _ in (train_sample(0, i, collage_share=1.0) for i in range(5)))


def test_collage_cells_are_drawn_in_their_quadrant_and_named_in_reading_order():
    rng = sample_rng(0, "test", 1)
    collage = sample_collage(rng, 64)
    assert len(collage.cells) == GRID * GRID and all(len(c.objects) == 1 for c in collage.cells)
    img = np.asarray(render_collage(collage)).astype(np.int64)
    assert img.shape == (64, 64, 3)
    for i, cell in enumerate(collage.cells):  # the cell's object colour is closest inside its own box
        rgb = np.asarray(cell.objects[0].rgb)
        dist = np.abs(img - rgb).sum(-1)
        r, c = divmod(i, GRID)
        box = dist[32 * r:32 * (r + 1), 32 * c:32 * (c + 1)]
        assert box.min() <= dist.min() + 1e-9, f"cell {i}: its colour is drawn outside its box"
        assert box.min() < 60
    labels = [c.objects[0].label for c in collage.cells]
    for seed in range(6):
        caption = caption_collage(collage, np.random.default_rng(seed))
        found = [caption.index(lab) for lab in labels]
        assert found == sorted(found), caption  # reading order
        if "in the" in caption:
            assert all(f"{lab} in the {q}" in caption for lab, q in zip(labels, QUADRANTS))
    meta = collage.metadata()
    assert meta["count"] == 4 and [c["box"] for c in meta["cells"]][3] == [32, 32, 64, 64]
    assert json.loads(json.dumps(meta)) == meta
    assert np.array_equal(np.asarray(render_sample(collage)), img.astype(np.uint8))
    assert all(o.color in COLORS for o in collage.objects)


def test_build_world_writes_collages_and_records_the_share(tmp_path):
    plain = build_world(tmp_path / "plain", workers=1, **SMALL)
    marker = json.loads((plain.root / "world.json").read_text())
    assert "collage_share" not in marker["args"]  # worlds without collages keep their marker (and caches)
    mixed = build_world(tmp_path / "mixed", workers=1, collage_share=0.5, **SMALL)
    assert json.loads((mixed.root / "world.json").read_text())["args"]["collage_share"] == 0.5
    with tarfile.open(mixed.root / "train" / "00000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    collages = [m for m in metas if "collage" in m["shapes"]]
    assert 5 <= len(collages) <= 25
    assert all(len(m["shapes"]["cells"]) == 4 for m in collages)
    again = build_world(tmp_path / "mixed", workers=2, collage_share=0.5, **SMALL)  # reused
    assert again == mixed
    with pytest.raises(ValueError, match="collage_share"):
        build_world(tmp_path / "bad", collage_share=1.5, **SMALL)
