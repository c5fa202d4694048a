"""CLIP_benchmark ``wds/<name>`` folders, read locally with webdataset.

Layout (what CLIP_benchmark's ``clip_benchmark_export_wds`` writes and what users already have)::

    ROOT/classnames.txt                          line i = class i
    ROOT/zeroshot_classification_templates.txt   one template a line, ``{c}`` for the class name
    ROOT/dataset_type.txt                        optional ("retrieval" for caption datasets)
    ROOT/test/nshards.txt                        an integer N
    ROOT/test/0.tar ... ROOT/test/{N-1}.tar      not zero-padded; same for train/

Each sample holds one image (``.webp``, ``.png``, ``.jpg`` or ``.jpeg``) and one target: ``.cls``
(integer text, classification), ``.npy`` (multi-hot vector, multilabel) or ``.txt`` (captions, one a
line, retrieval).
"""
from __future__ import annotations

import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from bcos_clip.data.readers.protocol import BenchmarkReader
from bcos_clip.data.readers.tar_complete import tar_sample_count

log = logging.getLogger(__name__)

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
TARGET_EXTS = {"cls": "classification", "npy": "multilabel", "txt": "retrieval"}
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
DATASET_TYPE_FILE = "dataset_type.txt"
# Used when a folder ships no templates file (CLIP's single default prompt plus two common variants).
DEFAULT_TEMPLATES = ("a photo of a {c}.", "a picture of a {c}.", "an image of a {c}.")

Target = Any  # int (classification) | np.ndarray (C,) float32 (multilabel) | List[str] (retrieval)


def read_lines(path: Path) -> List[str]:
    """Non-empty, stripped lines of a UTF-8 text file."""
    return [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


def clean_dataset_name(dataset: str) -> Tuple[str, str]:
    """``wds/vtab/cifar10`` -> (``vtab/cifar10``, ``vtab-cifar10``): the ``{dataset}`` and
    ``{dataset_cleaned}`` values of a ``--dataset_root`` template."""
    name = dataset[len("wds/"):] if dataset.startswith("wds/") else dataset
    return name, name.replace("/", "-")


def resolve_wds_root(dataset: str, dataset_root: str) -> Path:
    """The folder of one dataset: ``dataset_root`` with ``{dataset}`` / ``{dataset_cleaned}`` filled
    in, or ``dataset_root`` itself when it has no placeholder."""
    name, cleaned = clean_dataset_name(dataset)
    if "{" in dataset_root:
        try:
            return Path(dataset_root.format(dataset=name, dataset_cleaned=cleaned))
        except (KeyError, IndexError) as exc:
            raise ValueError(f"--dataset_root {dataset_root!r}: unknown placeholder {exc}; "
                             "use {dataset} or {dataset_cleaned}") from exc
    return Path(dataset_root)


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode image bytes to RGB, or raise ValueError naming ``where`` (shard and key)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except Exception as exc:  # PIL raises several unrelated types for broken files
        raise ValueError(f"{where}: corrupt image ({type(exc).__name__}: {exc})") from exc


def decode_target(ext: str, data: bytes, where: str, num_classes: Optional[int]) -> Target:
    """Decode a ``.cls`` / ``.npy`` / ``.txt`` payload; checks class ids against ``num_classes``."""
    if ext == "cls":
        try:
            label = int(data.decode("utf-8").strip())
        except ValueError as exc:
            raise ValueError(f"{where}: .cls is not an integer ({data[:20]!r})") from exc
        if num_classes is not None and not 0 <= label < num_classes:
            raise ValueError(f"{where}: label {label} but {CLASSNAMES_FILE} lists only "
                             f"{num_classes} classes")
        return label
    if ext == "npy":
        try:
            vec = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32).reshape(-1)
        except (ValueError, TypeError, OSError) as exc:  # object arrays (pickles) are refused, never loaded
            raise ValueError(f"{where}: .npy is not a numeric array ({exc})") from None
        if num_classes is not None and vec.shape[0] > num_classes:
            raise ValueError(f"{where}: multilabel vector has {vec.shape[0]} entries but "
                             f"{CLASSNAMES_FILE} lists only {num_classes} classes")
        return vec
    return [c.strip() for c in data.decode("utf-8").splitlines() if c.strip()]


def _pick(sample: dict, exts: Sequence[str]) -> Optional[str]:
    return next((e for e in exts if e in sample), None)


class _WdsSamples(torch.utils.data.IterableDataset):
    """Iterates ``(transform(image), target, order)`` over local tar shards; ``order`` =
    shard number << 32 | position in the shard (a global, rank- and worker-independent sort key)."""

    def __init__(self, urls: List[str], shard_ids: List[int], transform: Callable,
                 num_classes: Optional[int]) -> None:
        super().__init__()
        self.urls, self.transform, self.num_classes = urls, transform, num_classes
        self.shard_of = dict(zip(urls, shard_ids))

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, Target, int]]:
        import webdataset as wds

        if not self.urls:
            return
        pipe = wds.WebDataset(self.urls, shardshuffle=False, nodesplitter=None, empty_check=False)
        position: dict = {}
        for sample in pipe:
            url = sample.get("__url__", "?")
            where = f"{url}: sample {sample.get('__key__', '?')}"
            img_ext, tgt_ext = _pick(sample, IMAGE_EXTS), _pick(sample, tuple(TARGET_EXTS))
            if img_ext is None or tgt_ext is None:
                raise ValueError(f"{where}: needs an image ({'/'.join(IMAGE_EXTS)}) and a target "
                                 f"(.cls/.npy/.txt), found {sorted(k for k in sample if k[:2] != '__')}")
            image = decode_image(sample[img_ext], where)
            target = decode_target(tgt_ext, sample[tgt_ext], where, self.num_classes)
            pos = position[url] = position.get(url, -1) + 1
            yield self.transform(image), target, (self.shard_of.get(url, 0) << 32) | pos


@dataclass(frozen=True)
class WdsBenchmark(BenchmarkReader):
    """One CLIP_benchmark ``wds`` dataset folder.

    ``classnames`` is None for retrieval datasets; ``kind`` is ``classification``, ``multilabel`` or
    ``retrieval`` (from ``dataset_type.txt`` or the first sample's target extension).
    """

    def has_split(self, split: str) -> bool:
        return (self.root / split).is_dir()

    def shards(self, split: str) -> List[str]:
        """Paths of ``split``'s ``N`` shards, from ``split/nshards.txt``; each must be whole (a shard cut
        short raises TruncatedShardError: a number on part of a split is not a benchmark number)."""
        nfile = self.root / split / "nshards.txt"
        if not nfile.is_file():
            raise FileNotFoundError(f"{nfile} missing: not a CLIP_benchmark wds split "
                                    f"(dataset {self.name!r})")
        try:
            n = int(nfile.read_text().strip())
        except ValueError as exc:
            raise ValueError(f"{nfile}: expected an integer, got {nfile.read_text()[:20]!r}") from exc
        urls = [str(self.root / split / f"{i}.tar") for i in range(n)]
        missing = [u for u in urls if not Path(u).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} missing ({nfile} says {n} shards)")
        total = sum(tar_sample_count(Path(u)) for u in urls)  # a shard cut short fails the split here
        log.debug("%s/%s: %d shards, %d samples", self.name, split, n, total)
        return urls

    def torch_dataset(self, split: str, transform: Callable, rank: int = 0,
                      world_size: int = 1) -> torch.utils.data.IterableDataset:
        """Samples ``(transform(PIL) -> (3, H, W), target, order key)`` of this rank's shards
        (``shards[rank::world_size]``); DataLoader workers split them further."""
        urls = self.shards(split)
        ids = list(range(len(urls)))[rank::world_size]
        n = len(self.classnames) if self.classnames is not None else None
        return _WdsSamples([urls[i] for i in ids], ids, transform, n)


def _peek_kind(shard: Path) -> str:
    """The target kind of the first sample of a tar shard."""
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                ext = member.name.rsplit(".", 1)[-1].lower() if "." in member.name else ""
                if ext in TARGET_EXTS:
                    return TARGET_EXTS[ext]
    except tarfile.TarError as exc:
        raise ValueError(f"{shard}: unreadable tar ({exc})") from exc
    raise ValueError(f"{shard}: no .cls/.npy/.txt target found")


def open_wds_benchmark(dataset: str, dataset_root: str) -> WdsBenchmark:
    """Open ``wds/<name>`` under ``dataset_root`` (a folder or a ``{dataset}`` template)."""
    name, _ = clean_dataset_name(dataset)
    root = resolve_wds_root(dataset, dataset_root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: folder {root} not found (--dataset_root)")
    type_file = root / DATASET_TYPE_FILE
    declared = read_lines(type_file)[0].lower() if type_file.is_file() and read_lines(type_file) else ""
    split = "test" if (root / "test").is_dir() else "train"
    nfile = root / split / "nshards.txt"
    if declared == "retrieval":
        kind = "retrieval"
    elif nfile.is_file() and (root / split / "0.tar").is_file():
        kind = _peek_kind(root / split / "0.tar")
    else:
        kind = "classification"  # shards() raises the clear error when the split is used
    classnames = None
    if kind != "retrieval":
        cfile = root / CLASSNAMES_FILE
        if not cfile.is_file():
            raise FileNotFoundError(f"{cfile} missing (dataset {name!r})")
        classnames = read_lines(cfile)
    tfile = root / TEMPLATES_FILE
    templates = read_lines(tfile) if tfile.is_file() else list(DEFAULT_TEMPLATES)
    if kind != "retrieval" and not tfile.is_file():
        log.warning("%s missing; using default templates %s", tfile, DEFAULT_TEMPLATES)
    return WdsBenchmark(name=name, root=root, classnames=classnames, templates=templates, kind=kind)
