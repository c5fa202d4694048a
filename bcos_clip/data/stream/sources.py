"""Training data sources: expand a ``--train-data`` spec into shards and count their samples.

A spec is one or more sources joined by ``::``. Each source is

- a brace pattern of tar shards (``/data/cc3m/{00000..00331}.tar``, also ``pipe:``/``http`` URLs),
- a directory holding ``*.tar`` shards (img2dataset output, ImageNet shards), or
- a plain folder of images (recursively; ``<stem>.txt`` beside an image is its caption, the first
  sub-folder level is the class when the images sit in class folders). Image folders are cut into
  fixed-size chunks that play the role of shards.

Sample counts come from img2dataset's ``NNNNN_stats.json`` (``successes``) beside each tar, from the
file count for folders, or (local tars without stats) from reading the tar headers.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import braceexpand

from bcos_clip.data.stream.transforms import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FOLDER_CHUNK_MARK = "#chunk"
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz")


@dataclass(frozen=True)
class FolderChunk:
    """A run of image files from one folder that plays the role of a shard."""

    root: str
    files: Tuple[str, ...]          # paths relative to root
    classes: Tuple[str, ...] = ()   # sorted class folder names ('' when the folder is flat)


@dataclass(frozen=True)
class ShardSet:
    """The expanded training data: shard URLs (tars and folder chunks) and sample counts."""

    shards: Tuple[str, ...]
    chunks: Mapping[str, FolderChunk] = field(default_factory=dict)
    counts: Mapping[str, Optional[int]] = field(default_factory=dict)

    @property
    def num_samples(self) -> Optional[int]:
        """Total number of samples, or None when a shard's count is unknown."""
        values = [self.counts.get(s) for s in self.shards]
        return None if any(v is None for v in values) else int(sum(values))


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


def stats_path(tar_path: str) -> str:
    """img2dataset's statistics file for a shard: ``00012.tar`` -> ``00012_stats.json``."""
    base = tar_path
    for suffix in TAR_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base + "_stats.json"


def read_stats_count(tar_path: str) -> Optional[int]:
    """``successes`` from the shard's img2dataset stats file, or None when there is none."""
    path = stats_path(tar_path)
    if _is_remote(tar_path) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return int(json.load(fh)["successes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an img2dataset stats file with an integer 'successes' ({exc})")


def count_tar_samples(tar_path: str) -> int:
    """Count samples (distinct keys holding an image) by reading a local tar's headers.

    Unreadable or truncated tars count the samples read before the damage.
    """
    keys = set()
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            for member in tar:
                stem, _, ext = os.path.basename(member.name).partition(".")
                if member.isreg() and ext.lower() in IMAGE_EXTENSIONS:
                    keys.add(os.path.join(os.path.dirname(member.name), stem))
    except (tarfile.TarError, OSError, EOFError) as exc:
        log.warning("%s: unreadable while counting samples (%s); counted %d", tar_path, exc, len(keys))
    return len(keys)


def _list_images(root: str) -> List[str]:
    found = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        for name in files:
            if name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def _expand_folder(root: str, chunk_size: int) -> Dict[str, FolderChunk]:
    files = _list_images(root)
    if not files:
        raise ValueError(f"--train-data: folder {root} holds no tar shards and no images "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    top = sorted({f.split(os.sep)[0] for f in files if os.sep in f})
    flat = any(os.sep not in f for f in files)
    classes = tuple(top) if top and not flat else ()
    chunks = {}
    for start in range(0, len(files), chunk_size):
        url = f"{root}{FOLDER_CHUNK_MARK}{start // chunk_size:06d}"
        chunks[url] = FolderChunk(root, tuple(files[start:start + chunk_size]), classes)
    return chunks


def _expand_source(source: str) -> List[str]:
    """One ``::`` part -> tar URLs (a folder of images returns [])."""
    if os.path.isdir(source):
        tars = sorted(p for suffix in TAR_SUFFIXES for p in glob.glob(os.path.join(source, "*" + suffix)))
        return tars
    urls = list(braceexpand.braceexpand(source))
    missing = [u for u in urls if not _is_remote(u) and not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"--train-data: {len(missing)} of {len(urls)} shards of {source!r} do not "
                                f"exist (first: {missing[0]})")
    return urls


def expand_train_spec(spec: str, folder_chunk_size: int = 1000, count_missing: bool = True) -> ShardSet:
    """Expand a ``::``-joined spec into a :class:`ShardSet`.

    Args:
        spec: the ``--train-data`` string.
        folder_chunk_size: images per chunk for plain image folders.
        count_missing: count samples of local tars without stats by reading their headers.
    """
    if not spec or not spec.strip():
        raise ValueError("--train-data is empty")
    shards: List[str] = []
    chunks: Dict[str, FolderChunk] = {}
    counts: Dict[str, Optional[int]] = {}
    for source in (s.strip() for s in spec.split("::")):
        if not source:
            continue
        tars = _expand_source(source)
        if not tars and os.path.isdir(source):
            part = _expand_folder(source.rstrip("/"), folder_chunk_size)
            chunks.update(part)
            shards.extend(part)
            counts.update({url: len(c.files) for url, c in part.items()})
            continue
        for url in tars:
            shards.append(url)
            counts[url] = read_stats_count(url)
    if not shards:
        raise ValueError(f"--train-data {spec!r}: no shards found")
    unknown = [u for u in shards if counts[u] is None and not _is_remote(u)]
    if unknown and count_missing:
        log.warning("%d shards have no img2dataset *_stats.json; counting their samples from the tar "
                    "headers (pass --train-num-samples to skip this)", len(unknown))
        for url in unknown:
            counts[url] = count_tar_samples(url)
    return ShardSet(tuple(shards), chunks, counts)


def resolve_num_samples(shardset: ShardSet, override: Optional[int]) -> int:
    """The epoch's sample count: ``override`` if given, else the counted total (error when unknown)."""
    if override is not None:
        if override <= 0:
            raise ValueError(f"--train-num-samples must be positive, got {override}")
        return int(override)
    total = shardset.num_samples
    if total is None:
        raise ValueError("--train-data: the number of samples is unknown for remote shards without "
                         "*_stats.json; pass --train-num-samples N")
    if total == 0:
        raise ValueError("--train-data: the shards hold no samples")
    return total
