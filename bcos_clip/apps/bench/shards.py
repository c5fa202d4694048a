"""Synthetic data the benchmarks read: img2dataset-like caption shards and a CLIP_benchmark ``wds/`` folder.

Seeded random pixels (the content does not matter for speed): ``smooth`` images are 8 x 8 noise scaled
up (they decode faster than photos, so data rates measured on them are an upper bound), otherwise
full-resolution noise.

Example::

    spec = write_caption_shards(Path("/tmp/shards"), n_shards=2, per_shard=64, size=256)
    write_wds_benchmark(Path("/tmp/wds_bench"), n=128, size=64, classes=10)   # wds/<name> layout
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image


def random_image(rng: np.random.Generator, size: int, smooth: bool = True) -> Image.Image:
    """A (size x size) RGB image of seeded noise: 8 x 8 noise scaled up (smooth) or noise at full size."""
    if smooth:
        return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def write_caption_shards(directory: Path, n_shards: int, per_shard: int, size: int, seed: int = 0,
                         smooth: bool = True, stats: bool = False) -> str:
    """``directory/{00000..N-1}.tar`` with ``per_shard`` (``.jpg``, ``.txt``) samples each (and img2dataset's
    ``NNNNN_stats.json`` when ``stats``); returns the brace pattern (``--train-data``)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(n_shards):
        with wds.TarWriter(str(directory / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                jpg = _encoded(random_image(rng, size, smooth), "JPEG", quality=90)
                sink.write({"__key__": f"{s:05d}{i:05d}", "jpg": jpg, "txt": f"picture {i}"})
        if stats:
            (directory / f"{s:05d}_stats.json").write_text(json.dumps({"successes": per_shard}))
    return str(directory / f"{{00000..{n_shards - 1:05d}}}.tar")


def write_wds_benchmark(root: Path, n: int, size: int, classes: int, per_shard: int = 256, seed: int = 0) -> Path:
    """A CLIP_benchmark ``wds/`` classification folder: classnames, templates, ``test/{0..}.tar`` of
    (``.webp``, ``.cls``) samples of full-size noise and ``test/nshards.txt``; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "test").mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(f"class {i}" for i in range(classes)) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na bad photo of a {c}.\n")
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        with wds.TarWriter(str(root / "test" / f"{s}.tar")) as sink:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                webp = _encoded(random_image(rng, size, smooth=False), "WEBP", quality=90, method=0)
                sink.write({"__key__": f"{i:07d}", "webp": webp, "cls": str(i % classes)})
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    return root
