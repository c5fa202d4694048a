"""The training stream: a resumable, DDP-safe webdataset pipeline over a :class:`ShardSet`.

Per epoch and per (rank, worker) the stream is a pure function of ``(seed, epoch)``:

1. shards: the shard list shuffled by ``(seed, epoch)``, split with ``wds.split_by_node`` and then by
   (logical) worker; when a worker runs out it reshuffles *its own* shards and goes on, so every rank
   and worker yields exactly its quota of batches (no rank waits for another at the epoch's end) and
   ranks never read each other's shards. ``resampled`` draws shards with replacement instead.
2. raw samples from tars (``wds.tarfile_samples``) or folder chunks; unreadable / truncated / empty
   shards are skipped and counted by :class:`BadDataCounter`.
3. a seeded sample shuffle buffer (``wds.shuffle``, within each pass), then the resume skip (raw samples, no decoding),
   then raw batches of ``batch_size``.
4. decode + RandomResizedCrop + flip per sample, seeded by (seed, epoch, shard, key): corrupt images
   and samples without an image are dropped from their batch and counted.

Batch ``i`` of an epoch comes from logical worker ``i % W``; the DataLoader starts at worker 0, so on
resume after ``B`` batches DataLoader worker ``j`` plays logical worker ``(j + B) % W``. With that, a
resumed epoch yields exactly the batches the uninterrupted one would have, for any worker count.
"""
from __future__ import annotations

import itertools
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from bcos_clip.data.stream.sources import FolderChunk, ShardSet
from bcos_clip.data.stream.transforms import IMAGE_EXTENSIONS, CropSpec, decode_rgb, train_augment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    """How one epoch's stream is built (everything that decides the data order)."""

    batch_size: int
    crop: CropSpec
    seed: int = 0
    shuffle_buffer: int = 1000
    resampled: bool = False


class BadDataCounter:
    """A webdataset exception handler that counts (and logs the first few) skipped items.

    Lives in the worker process; :meth:`take` returns the counts since the last call so that they
    can ride along with the next batch to the main process.
    """

    def __init__(self, max_logged: int = 5) -> None:
        self.counts: Counter = Counter()
        self.max_logged = max_logged
        self.logged = 0

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if self.logged < self.max_logged:
            self.logged += 1
            log.warning("skipping bad data (%s): %s", kind, detail[:300])

    def __call__(self, exn: BaseException) -> bool:
        self.add("unreadable_shard_data", repr(exn))
        return True

    def take(self) -> Dict[str, int]:
        out = dict(self.counts)
        self.counts.clear()
        return out


def _worker_place(rotate: int) -> tuple:
    """``(rank, world, logical_worker, num_workers)``; workers rotated by ``rotate`` (see module doc)."""
    rank, world, worker, num_workers = wds.utils.pytorch_worker_info()
    return rank, world, (worker + rotate) % num_workers, num_workers


def _batches_for_worker(logical: int, num_workers: int, start: int, stop: int) -> int:
    """How many of the global batch indices in ``[start, stop)`` are ``logical (mod num_workers)``."""
    def upto(n: int) -> int:
        return max(0, (n - logical + num_workers - 1) // num_workers)
    return upto(stop) - upto(start)


def _epoch_shards(urls: List[str], seed: int, epoch: int, logical: int, num_workers: int,
                  rank: int) -> Iterator[Dict[str, Any]]:
    """This (rank, worker)'s shards for the epoch, repeated (reshuffled) without end."""
    order = list(urls)
    random.Random(wds.utils.make_seed(seed, epoch)).shuffle(order)
    mine = list(itertools.islice(wds.split_by_node(order), logical, None, num_workers))
    if not mine:
        raise RuntimeError(f"rank {rank} worker {logical}: no shards left after splitting {len(urls)} "
                           f"shards over nodes and {num_workers} workers")
    for rep in itertools.count():
        if rep:
            random.Random(wds.utils.make_seed(seed, epoch, rank, logical, rep)).shuffle(mine)
        for url in mine:
            yield {"url": url, "pass": rep}


def _resampled_shards(urls: List[str], seed: int, epoch: int, rank: int,
                      logical: int) -> Iterator[Dict[str, Any]]:
    rng = random.Random(wds.utils.make_seed(seed, epoch, rank, logical))
    for draw in itertools.count():
        yield {"url": rng.choice(urls), "pass": draw // max(1, len(urls))}


def _folder_samples(chunk: FolderChunk, url: str, bad: BadDataCounter) -> Iterator[Dict[str, Any]]:
    for rel in chunk.files:
        path = os.path.join(chunk.root, rel)
        stem, ext = os.path.splitext(rel)
        sample: Dict[str, Any] = {"__key__": stem, "__url__": url}
        try:
            with open(path, "rb") as fh:
                sample[ext[1:].lower()] = fh.read()
            caption = os.path.join(chunk.root, stem + ".txt")
            if os.path.isfile(caption):
                with open(caption, "rb") as fh:
                    sample["txt"] = fh.read()
        except OSError as exc:
            bad.add("unreadable_file", f"{path}: {exc}")
            continue
        if chunk.classes:
            sample["cls"] = str(chunk.classes.index(rel.split(os.sep)[0])).encode()
        yield sample


def _raw_samples(shards: Iterable[Dict[str, Any]], chunks: Dict[str, FolderChunk],
                 bad: BadDataCounter, where: str) -> Iterator[Dict[str, Any]]:
    """Shard dicts -> raw samples (bytes per extension), tagged with the pass index.

    Raises:
        RuntimeError: a whole pass over this worker's shards gave no sample (all empty or broken).
    """
    current_pass, seen_in_pass, opened = 0, 0, 0
    for shard in shards:
        if shard["pass"] != current_pass:
            if seen_in_pass == 0:
                raise RuntimeError(f"{where}: no readable sample in {opened} shard reads "
                                   f"(bad data so far: {dict(bad.counts)}); check --train-data")
            current_pass, seen_in_pass, opened = shard["pass"], 0, 0
        opened += 1
        url = shard["url"]
        if url in chunks:
            samples = _folder_samples(chunks[url], url, bad)
        else:
            samples = wds.tarfile_samples([{"url": url}], handler=bad)
        for sample in samples:
            seen_in_pass += 1
            sample["__pass__"] = shard["pass"]
            yield sample


def _shuffle_per_pass(samples: Iterator[Dict[str, Any]], spec: StreamSpec, epoch: int, rank: int,
                      logical: int) -> Iterator[Dict[str, Any]]:
    """``wds.shuffle`` within each pass over the worker's shards (the buffer never mixes passes, so a
    worker's first pass yields each of its samples exactly once)."""
    for pass_index, group in itertools.groupby(samples, key=lambda s: s["__pass__"]):
        rng = random.Random(wds.utils.make_seed(spec.seed, epoch, rank, logical, pass_index))
        yield from wds.shuffle(spec.shuffle_buffer, min(spec.shuffle_buffer, 100), rng=rng)(group)


def _image_bytes(sample: Dict[str, Any]) -> Optional[bytes]:
    for ext in IMAGE_EXTENSIONS:
        if ext in sample:
            return sample[ext]
    return None


def _text(value: Optional[bytes]) -> Optional[str]:
    if value is None:
        return None
    text = value.decode("utf-8", errors="replace").strip()
    return text or None


def decode_batch(raw: List[Dict[str, Any]], spec: StreamSpec, epoch: int,
                 bad: BadDataCounter) -> Dict[str, Any]:
    """Decode and augment a raw batch; bad samples are dropped and counted.

    Returns:
        dict with ``images`` (n, 3, S, S) uint8, ``captions`` (list of n str|None), ``labels`` (n,)
        int64 (-1 where absent), ``keys``, ``urls``, ``raw`` (len(raw)) and ``bad`` (counts since the
        previous batch of this worker); ``n <= len(raw)``.
    """
    images, captions, labels, keys, urls = [], [], [], [], []
    for sample in raw:
        key, url = sample.get("__key__", "?"), sample.get("__url__", "?")
        data = _image_bytes(sample)
        if data is None:
            bad.add("no_image", f"{url}: sample {key} has no {'/'.join(IMAGE_EXTENSIONS)} entry")
            continue
        # the shard's file name, not its path: the same data in another folder gets the same crops
        rng = random.Random(f"{spec.seed}:{epoch}:{sample['__pass__']}:{os.path.basename(url)}:{key}")
        try:
            images.append(train_augment(decode_rgb(data), spec.crop, rng))
        except Exception as exc:  # PIL raises many types on corrupt data
            bad.add("corrupt_image", f"{url}: sample {key}: {exc!r}")
            continue
        captions.append(_text(sample.get("txt")))
        cls = _text(sample.get("cls"))
        labels.append(int(cls) if cls is not None and cls.lstrip("-").isdigit() else -1)
        keys.append(key)
        urls.append(url)
    size = spec.crop.size
    return {
        "images": torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8),
        "captions": captions,
        "labels": torch.tensor(labels, dtype=torch.long),
        "keys": keys,
        "urls": urls,
        "raw": len(raw),
        "bad": bad.take(),
    }


class EpochStream(IterableDataset):
    """One epoch of training batches for this rank, resumable at a batch boundary.

    Args:
        shardset: the expanded ``--train-data``.
        spec: stream settings.
        epoch: epoch index (seeds shard order, shuffle buffer and augmentation).
        batches_per_epoch: batches this rank yields in a full epoch (the same on every rank).
        start_batch: batches of this epoch already consumed (resume).
        num_workers: DataLoader workers (0 = main process).
    """

    def __init__(self, shardset: ShardSet, spec: StreamSpec, epoch: int, batches_per_epoch: int,
                 start_batch: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if not 0 <= start_batch <= batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside [0, {batches_per_epoch}]")
        self.urls = list(shardset.shards)
        self.chunks = dict(shardset.chunks)
        self.spec, self.epoch = spec, epoch
        self.batches_per_epoch, self.start_batch = batches_per_epoch, start_batch
        self.num_workers = max(1, num_workers)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        rank, world, logical, num_workers = _worker_place(self.start_batch % self.num_workers)
        where = f"rank {rank}/{world} worker {logical}/{num_workers}"
        spec, bad = self.spec, BadDataCounter()
        consumed = _batches_for_worker(logical, num_workers, 0, self.start_batch)
        todo = _batches_for_worker(logical, num_workers, self.start_batch, self.batches_per_epoch)
        if spec.resampled:
            shards = _resampled_shards(self.urls, spec.seed, self.epoch, rank, logical)
        else:
            shards = _epoch_shards(self.urls, spec.seed, self.epoch, logical, num_workers, rank)
        stream: Iterator = _raw_samples(shards, self.chunks, bad, where)
        if spec.shuffle_buffer > 1:
            stream = _shuffle_per_pass(stream, spec, self.epoch, rank, logical)
        stream = itertools.islice(stream, consumed * spec.batch_size, None)
        for _ in range(todo):
            raw = list(itertools.islice(stream, spec.batch_size))
            yield decode_batch(raw, spec, self.epoch, bad)


def clamp_workers(requested: int, num_shards: int, world_size: int, resampled: bool) -> int:
    """Workers per rank, at most the shards each rank gets (warns when clamping)."""
    if resampled or requested <= 0:
        return max(0, requested)
    per_rank = num_shards // max(1, world_size)
    if per_rank < 1:
        raise ValueError(f"--train-data has {num_shards} shards for {world_size} ranks: every rank needs "
                         f"at least one shard (use more shards or --dataset-resampled)")
    if requested > per_rank:
        log.warning("--workers %d clamped to %d: each of the %d ranks has only %d of the %d shards",
                    requested, per_rank, world_size, per_rank, num_shards)
        return per_rank
    return requested


def make_epoch_loader(shardset: ShardSet, spec: StreamSpec, epoch: int, batches_per_epoch: int,
                      start_batch: int = 0, num_workers: int = 0,
                      pin_memory: bool = False) -> DataLoader:
    """A DataLoader over :class:`EpochStream` (batches already formed; ``batch_size=None``)."""
    dataset = EpochStream(shardset, spec, epoch, batches_per_epoch, start_batch, num_workers)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None)


def raw_samples_once(shardset: ShardSet, bad: BadDataCounter) -> Iterator[Dict[str, Any]]:
    """Every raw sample (bytes per extension) of every shard once, in shard order; unreadable data is
    skipped and counted in ``bad``."""
    shards = ({"url": u, "pass": 0} for u in shardset.shards)
    return _raw_samples(shards, dict(shardset.chunks), bad, "read")


def first_sample_fields(shardset: ShardSet) -> List[str]:
    """The extensions of the first readable sample (to tell caption shards from class shards).

    Raises:
        ValueError: no shard holds a readable sample.
    """
    bad = BadDataCounter(max_logged=0)
    for sample in raw_samples_once(shardset, bad):
        return sorted(k for k in sample if not k.startswith("__"))
    raise ValueError(f"--train-data: no readable sample in any of its {len(shardset.shards)} shard(s) "
                     f"(bad data: {dict(bad.counts) or 'none, the shards are empty'})")
