"""Helpers for the training tests: shards in the exact img2dataset / ImageNet layouts, a tiny teacher.

Not a test module (no tests); imported by tests/test_train_*.py and tests/test_data_train_shards.py.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import webdataset as wds
from PIL import Image

SHAPE_COLORS = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40)]


def image_bytes(seed: int, size: Tuple[int, int] = (56, 48), fmt: str = "JPEG") -> bytes:
    """A small picture (noisy background + a coloured square whose colour is ``seed % 4``)."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = (rng.random((h, w, 3)) * 90 + 60).astype(np.uint8)
    x, y = rng.integers(0, w // 2), rng.integers(0, h // 2)
    arr[y:y + h // 2, x:x + w // 2] = SHAPE_COLORS[seed % 4]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def caption(seed: int) -> str:
    return ["a red square", "a green square", "a blue square", "a yellow square"][seed % 4] + f" number {seed}"


def write_img2dataset(root: Path, n_shards: int, per_shard: int, seed: int = 0,
                      captions: bool = True, stats: bool = True) -> str:
    """img2dataset output: ``00000.tar`` (``<key>.jpg/.txt/.json``) + ``00000_stats.json``. Returns the spec."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with wds.TarWriter(str(root / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                k = seed * 100000 + s * per_shard + i
                sample = {"__key__": key, "jpg": image_bytes(k),
                          "json": json.dumps({"key": key, "status": "success", "url": f"http://x/{key}.jpg"})}
                if captions:
                    sample["txt"] = caption(k)
                sink.write(sample)
        if stats:
            (root / f"{s:05d}_stats.json").write_text(json.dumps(
                {"count": per_shard, "successes": per_shard, "failed_to_download": 0}))
    return str(root) + "/{" + f"{0:05d}..{n_shards - 1:05d}" + "}.tar"


def write_imagenet(root: Path, n_shards: int, per_shard: int, n_classes: int = 4) -> str:
    """ImageNet shards: ``imagenet-train-000000.tar`` with ``<key>.jpg`` + ``<key>.cls``, no stats files."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with wds.TarWriter(str(root / f"imagenet-train-{s:06d}.tar")) as sink:
            for i in range(per_shard):
                k = s * per_shard + i
                sink.write({"__key__": f"n0000{k % n_classes}_{k:06d}", "jpg": image_bytes(k),
                            "cls": str(k % n_classes)})
    return str(root) + "/imagenet-train-{" + f"{0:06d}..{n_shards - 1:06d}" + "}.tar"


def write_tiny_teacher(directory: Path, model=None) -> Tuple[str, str]:
    """A tiny RN teacher as (JSON config path, weights path) for ``--model`` / ``--pretrained``."""
    import torch
    from tests.conftest import TINY_RN, make_bcos_friendly

    from bcos_clip import load_clip

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tiny_rn.json"
    config.write_text(json.dumps(TINY_RN))
    if model is None:
        torch.manual_seed(0)
        model, _, _ = load_clip(str(config))
        make_bcos_friendly(model)
    weights = directory / "tiny_rn.pt"
    torch.save(model.state_dict(), weights)
    return str(config), str(weights)


def subprocess_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def losses_by_step(records: List[dict]) -> dict:
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def first(items: List, default: Optional[object] = None):
    return items[0] if items else default


def write_wds_classification(root: Path, n: int = 8, classnames=("red", "green", "blue", "yellow")) -> str:
    """A CLIP_benchmark ``wds/`` folder: classnames, templates, ``test/nshards.txt`` + ``test/0.tar``."""
    (root / "test").mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c} square.\n{c}\n")
    (root / "test" / "nshards.txt").write_text("1\n")
    with wds.TarWriter(str(root / "test" / "0.tar")) as sink:
        for i in range(n):
            sink.write({"__key__": f"s{i:04d}", "jpg": image_bytes(i), "cls": str(i % len(classnames))})
    return str(root)
