"""Calibration images (for refitting BatchNorm statistics) from the sources users already have.

``path`` is one of

- a CLIP_benchmark ``wds/`` dataset folder (``train/nshards.txt`` or ``test/nshards.txt``): its ``train``
  split, else ``test`` (with a warning: statistics from test images);
- a folder of tar shards, a brace pattern of shards (img2dataset, ImageNet shards), or a folder of images
  (recursively): anything ``--train-data`` takes.

Samples pass a seeded shuffle buffer (shards are often sorted by class), are decoded and transformed by
``transform`` (the model's own eval preprocess: PIL -> (3, H, W) in [0, 1]); unreadable ones are skipped
and counted.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Callable, Iterator, List

import braceexpand
import torch
import webdataset as wds
from PIL import Image

from bcos_clip.data.readers.wds import open_wds_benchmark
from bcos_clip.data.stream.loader import BadDataCounter, raw_samples_once
from bcos_clip.data.stream.sources import ShardSet, expand_train_spec
from bcos_clip.data.stream.transforms import IMAGE_EXTENSIONS, decode_rgb

log = logging.getLogger(__name__)


def _wds_benchmark_shards(root: Path) -> ShardSet:
    split = "train" if (root / "train" / "nshards.txt").is_file() else "test"
    if split == "test":
        log.warning("calibration data %s has no train split: using its test images", root)
    return ShardSet(tuple(open_wds_benchmark(str(root), str(root)).shards(split)))


def calibration_shards(path: str) -> ShardSet:
    """``path`` (see the module doc) -> the shards to read; a missing path is a FileNotFoundError naming it."""
    root = Path(path)
    if root.is_dir() and any((root / s / "nshards.txt").is_file() for s in ("train", "test")):
        return _wds_benchmark_shards(root)
    if not root.exists() and not any(os.path.isfile(u) for u in braceexpand.braceexpand(path)):
        raise FileNotFoundError(f"calibration data {path}: no such folder, shard or shard pattern")
    try:
        return expand_train_spec(path, count_missing=False)
    except (ValueError, FileNotFoundError) as exc:  # its messages name --train-data: name this source
        detail = re.sub(r"^--train-data:? ?", "", str(exc))
        raise type(exc)(f"calibration data {path}: {detail}") from exc


def _decoded(samples: Iterator[dict], transform: Callable[[Image.Image], torch.Tensor],
             bad: BadDataCounter) -> Iterator[torch.Tensor]:
    for sample in samples:
        data = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
        if data is None:
            bad.add("no_image", f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')}")
            continue
        try:
            yield transform(decode_rgb(data))
        except Exception as exc:  # PIL raises many types on corrupt data
            bad.add("corrupt_image", f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')}: {exc!r}")


def calibration_batches(path: str, transform: Callable[[Image.Image], torch.Tensor], batch_size: int,
                        seed: int = 0, shuffle_buffer: int = 1000) -> Iterator[torch.Tensor]:
    """Batches (B, 3, H, W) of ``transform``ed images from ``path``, read lazily (stop iterating to stop
    reading); the last one may be smaller. Raises ValueError when no image could be read."""
    if batch_size < 1:
        raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
    shards = calibration_shards(path)
    bad = BadDataCounter()
    samples = raw_samples_once(shards, bad)
    if shuffle_buffer > 1:
        samples = wds.shuffle(shuffle_buffer, min(shuffle_buffer, 100), rng=random.Random(seed))(samples)
    batch: List[torch.Tensor] = []
    n = 0
    for image in _decoded(samples, transform, bad):
        batch.append(image)
        if len(batch) == batch_size:
            n += len(batch)
            yield torch.stack(batch)
            batch = []
    if batch:
        n += len(batch)
        yield torch.stack(batch)
    if n == 0:
        raise ValueError(f"calibration data {path}: no readable image in {len(shards.shards)} shards "
                         f"(skipped: {dict(bad.counts) or 'none'})")
