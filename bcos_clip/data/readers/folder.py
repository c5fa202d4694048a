"""Image folders as benchmark datasets: one sub-folder per class.

``ROOT/<class>/<image>`` is the ``test`` split; or ``ROOT/train/<class>/...``, ``ROOT/test/<class>/...``
(and ``val``/``validation``) give several splits. Classes are the sorted sub-folder names of the
first split found; their prompt names are the folder names with ``_`` read as a space, unless
``ROOT/classnames.txt`` gives one line per class (in sorted folder order). Templates come from
``ROOT/zeroshot_classification_templates.txt`` when present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

from bcos_clip.data.readers.protocol import BenchmarkReader
from bcos_clip.data.readers.wds import (CLASSNAMES_FILE, DEFAULT_TEMPLATES, TEMPLATES_FILE,
                                          decode_image, read_lines)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPLIT_DIRS = {"train": ("train",), "test": ("test", "val", "validation"),
              "validation": ("val", "validation"), "val": ("val", "validation")}


class _FolderSamples(torch.utils.data.Dataset):
    """Map-style ``(transform(image), label, file index)`` over ``(path, label, index)`` items."""

    def __init__(self, items: List[Tuple[Path, int, int]], transform: Callable) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int, int]:
        path, label, index = self.items[i]
        return self.transform(decode_image(path.read_bytes(), str(path))), label, index


def _list_split(split_dir: Path, folders: List[str]) -> List[Tuple[Path, int]]:
    index = {name: i for i, name in enumerate(folders)}
    items = []
    for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if sub.name not in index:
            raise ValueError(f"{sub}: class folder not among the classes {folders[:5]}...")
        items += [(f, index[sub.name]) for f in sorted(sub.rglob("*"))
                  if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    return items


@dataclass(frozen=True)
class ImageFolderBenchmark(BenchmarkReader):
    """Classification dataset read from class sub-folders."""

    split_dirs: Dict[str, Path] = field(repr=False)
    folders: List[str] = field(repr=False)

    def _dir(self, split: str) -> Path:
        for cand in SPLIT_DIRS.get(split, (split,)):
            if cand in self.split_dirs:
                return self.split_dirs[cand]
        raise KeyError(f"{self.root}: no split {split!r} (has {sorted(self.split_dirs)})")

    def has_split(self, split: str) -> bool:
        return any(c in self.split_dirs for c in SPLIT_DIRS.get(split, (split,)))

    def torch_dataset(self, split: str, transform: Callable, rank: int = 0,
                      world_size: int = 1) -> torch.utils.data.Dataset:
        """This rank's files (``files[rank::world_size]``) as ``(transform(PIL) -> (3,H,W), label,
        file index)``."""
        items = _list_split(self._dir(split), self.folders)
        if not items:
            raise FileNotFoundError(f"{self._dir(split)}: no images ({'/'.join(IMAGE_SUFFIXES)})")
        indexed = [(path, label, i) for i, (path, label) in enumerate(items)]
        return _FolderSamples(indexed[rank::world_size], transform)


def open_image_folder(path: str) -> ImageFolderBenchmark:
    """Open ``path`` as an image-folder dataset (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found")
    known = {d for names in SPLIT_DIRS.values() for d in names}
    split_dirs = {p.name: p for p in root.iterdir() if p.is_dir() and p.name in known}
    if not split_dirs:
        split_dirs = {"test": root}
    first = split_dirs.get("test") or split_dirs.get("val") or split_dirs.get("validation") \
        or split_dirs["train"]
    folders = sorted(p.name for p in first.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{first}: no class sub-folders")
    cfile = root / CLASSNAMES_FILE
    if cfile.is_file():
        classnames = read_lines(cfile)
        if len(classnames) < len(folders):
            raise ValueError(f"{cfile} lists {len(classnames)} classes but {first} has "
                             f"{len(folders)} class folders")
    else:
        classnames = [f.replace("_", " ") for f in folders]
    tfile = root / TEMPLATES_FILE
    templates = read_lines(tfile) if tfile.is_file() else list(DEFAULT_TEMPLATES)
    return ImageFolderBenchmark(name=root.name, root=root, classnames=classnames, templates=templates,
                                kind="classification", split_dirs=split_dirs, folders=folders)
