"""Hugging Face ``datasets`` saved to disk, as benchmark datasets (offline, no hub access).

Accepted folders: the output of ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with
``load_from_disk``), or plain local ``.parquet`` / ``.arrow`` files (split from a ``train/``-style
parent folder or a ``train-00000-of-00001.parquet``-style file name; otherwise ``test``).
Columns: an image column (``datasets.Image`` feature, or named ``image``/``img``) and a target: a
``ClassLabel`` (class names from the feature; else ``classnames.txt`` in the folder), a list of
``ClassLabel`` (multilabel), or a caption column (``caption``/``captions``/``text``, retrieval).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from bcos_clip.data.readers.protocol import BenchmarkReader
from bcos_clip.data.readers.wds import (CLASSNAMES_FILE, DEFAULT_TEMPLATES, TEMPLATES_FILE,
                                          decode_image, read_lines)

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"test": ("test", "validation", "val", "valid"), "train": ("train",),
                 "validation": ("validation", "val", "valid"), "val": ("validation", "val", "valid")}
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "cls", "fine_label")
CAPTION_COLUMNS = ("captions", "caption", "text", "txt")


def _split_of(path: Path) -> str:
    for name in (path.parent.name, path.name.split("-")[0].split(".")[0]):
        if name in SPLIT_ALIASES or name in ("valid",):
            return name
    return "test"


def _load_splits(root: Path) -> Dict[str, Any]:
    """``{split: datasets.Dataset}`` from a saved dataset or local parquet/arrow files."""
    import datasets

    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        loaded = datasets.load_from_disk(str(root))
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"test": loaded}
    for builder, ext in (("parquet", "parquet"), ("arrow", "arrow")):
        files = sorted(root.rglob(f"*.{ext}"))
        if files:
            data_files: Dict[str, List[str]] = {}
            for f in files:
                data_files.setdefault(_split_of(f), []).append(str(f))
            return dict(datasets.load_dataset(builder, data_files=data_files))
    raise FileNotFoundError(f"{root}: no saved HF dataset (dataset_dict.json/state.json) and no "
                            ".parquet/.arrow files")


def _find_column(ds: Any, feature_type: type, names: Tuple[str, ...]) -> Optional[str]:
    for col, feat in ds.features.items():
        if isinstance(feat, feature_type):
            return col
    return next((c for c in names if c in ds.features), None)


def _label_info(ds: Any, root: Path) -> Tuple[Optional[str], str, Optional[List[str]]]:
    """(label column, kind, class names) of a dataset split."""
    import datasets

    for col, feat in ds.features.items():
        inner = getattr(feat, "feature", None)
        if isinstance(feat, datasets.ClassLabel):
            return col, "classification", list(feat.names)
        if isinstance(inner, datasets.ClassLabel):
            return col, "multilabel", list(inner.names)
    col = next((c for c in LABEL_COLUMNS if c in ds.features), None)
    if col is not None:
        cfile = root / CLASSNAMES_FILE
        if not cfile.is_file():
            raise ValueError(f"{root}: label column {col!r} is not a ClassLabel and {cfile} is missing")
        kind = "multilabel" if isinstance(ds.features[col], (list, datasets.Sequence, datasets.List)) \
            else "classification"
        return col, kind, read_lines(cfile)
    cap = next((c for c in CAPTION_COLUMNS if c in ds.features), None)
    if cap is None:
        raise ValueError(f"{root}: no label column ({'/'.join(LABEL_COLUMNS)} or a ClassLabel) "
                         f"and no caption column ({'/'.join(CAPTION_COLUMNS)}); columns: "
                         f"{list(ds.features)}")
    return cap, "retrieval", None


class _HfSamples(torch.utils.data.Dataset):
    """Map-style ``(transform(image), target)`` over one (sharded) split."""

    def __init__(self, ds: Any, image_col: str, target_col: str, kind: str,
                 num_classes: Optional[int], transform: Callable, where: str, offset: int = 0) -> None:
        import datasets

        self.ds = ds.cast_column(image_col, datasets.Image(decode=False))
        self.offset = offset
        self.image_col, self.target_col, self.kind = image_col, target_col, kind
        self.num_classes, self.transform, self.where = num_classes, transform, where

    def __len__(self) -> int:
        return len(self.ds)

    def _target(self, value: Any, where: str) -> Any:
        if self.kind == "retrieval":
            return [value] if isinstance(value, str) else [str(v) for v in value]
        if self.kind == "multilabel":
            vec = np.zeros(self.num_classes, dtype=np.float32)
            vec[np.asarray(value, dtype=np.int64)] = 1.0
            return vec
        label = int(value)
        if not 0 <= label < self.num_classes:
            raise ValueError(f"{where}: label {label} outside the {self.num_classes} class names")
        return label

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Any, int]:
        row = self.ds[i]
        where = f"{self.where}[{i}]"
        img = row[self.image_col]
        data = img.get("bytes") if isinstance(img, dict) else None
        if data is None and isinstance(img, dict) and img.get("path"):
            data = Path(img["path"]).read_bytes()
        if data is None:
            raise ValueError(f"{where}: image column {self.image_col!r} holds no bytes or path")
        image = self.transform(decode_image(data, where))
        return image, self._target(row[self.target_col], where), self.offset + i


@dataclass(frozen=True)
class HfBenchmark(BenchmarkReader):
    """A local HF dataset: ``classnames`` (None for retrieval), ``templates``, ``kind``."""

    splits: Dict[str, Any] = field(repr=False)
    image_column: str = "image"
    target_column: str = "label"

    def _split_name(self, split: str) -> Optional[str]:
        return next((s for s in SPLIT_ALIASES.get(split, (split,)) if s in self.splits), None)

    def has_split(self, split: str) -> bool:
        return self._split_name(split) is not None

    def torch_dataset(self, split: str, transform: Callable, rank: int = 0,
                      world_size: int = 1) -> torch.utils.data.Dataset:
        """This rank's contiguous part of ``split``: items ``(transform(PIL) -> (3,H,W), target,
        row index)``."""
        name = self._split_name(split)
        if name is None:
            raise KeyError(f"{self.root}: no split {split!r} (has {sorted(self.splits)})")
        ds = self.splits[name]
        start, stop = len(ds) * rank // world_size, len(ds) * (rank + 1) // world_size
        if world_size > 1:
            ds = ds.select(range(start, stop))
        n = len(self.classnames) if self.classnames is not None else None
        return _HfSamples(ds, self.image_column, self.target_column, self.kind, n, transform,
                          f"{self.root}:{name}", offset=start)


def open_hf_benchmark(path: str) -> HfBenchmark:
    """Open a local HF dataset folder (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"HF dataset folder {root} not found")
    splits = _load_splits(root)
    first = splits["test"] if "test" in splits else next(iter(splits.values()))
    import datasets

    image_col = _find_column(first, datasets.Image, IMAGE_COLUMNS)
    if image_col is None:
        raise ValueError(f"{root}: no image column (a datasets.Image feature or one of "
                         f"{'/'.join(IMAGE_COLUMNS)}); columns: {list(first.features)}")
    target_col, kind, classnames = _label_info(first, root)
    tfile = root / TEMPLATES_FILE
    templates = read_lines(tfile) if tfile.is_file() else list(DEFAULT_TEMPLATES)
    return HfBenchmark(name=root.name, root=root, classnames=classnames, templates=templates,
                       kind=kind, splits=splits, image_column=image_col, target_column=target_col)
