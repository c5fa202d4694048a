"""Is a tar shard whole? A benchmark number must come from the whole test split, never from the samples
before the point where a download or copy was cut.

A tar archive ends with zero blocks (the end-of-archive marker every writer appends: tarfile, GNU tar,
webdataset's TarWriter). Python's tarfile (and so webdataset) stops *silently* when a file ends at a
member boundary, or inside a header, so a shard cut there reads as a shorter shard. CLIP_benchmark
folders carry no sample count (``nshards.txt`` only), so the marker is the signal: after the last
member's data there must be a zero block.

Example::

    n = tar_sample_count(Path("wds_cifar10/test/0.tar"))   # samples, or TruncatedShardError
"""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Set

BLOCK = tarfile.BLOCKSIZE  # 512


class TruncatedShardError(ValueError):
    """A tar shard that was cut short (or is corrupt) before its end-of-archive marker."""


def sample_key(member_name: str) -> str:
    """webdataset's sample key of a member: its path up to the first dot of the file name."""
    folder, _, base = member_name.rpartition("/")
    return (folder + "/" if folder else "") + base.split(".", 1)[0]


def tar_sample_count(path: Path) -> int:
    """The number of samples (distinct keys) in a whole tar shard; TruncatedShardError when it is cut short.

    Reads member headers only (data is skipped by seeking), so it costs one small read per member.
    """
    keys: Set[str] = set()
    last = None
    with open(path, "rb") as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r:") as tar:
                for member in tar:
                    if member.isfile():
                        last = sample_key(member.name)
                        keys.add(last)
                end = tar.offset  # where the next header (or the end-of-archive marker) must start
        except tarfile.ReadError as exc:  # the last member read is incomplete, so is its sample
            whole = len(keys - {last})
            raise TruncatedShardError(f"{path}: cut short or corrupt after {whole} whole samples ({exc}); "
                                      "download or copy it again") from None
        fh.seek(end)
        marker = fh.read(BLOCK)
    if len(marker) < BLOCK or marker.strip(b"\0"):
        raise TruncatedShardError(f"{path}: cut short after {len(keys)} whole samples (no tar end-of-archive "
                                  "marker); download or copy it again")
    return len(keys)
