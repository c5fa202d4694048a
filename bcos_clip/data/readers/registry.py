"""Dataset specs -> readers: ``wds/<name>`` (or a bare ``<name>``, as suites write it) under
``--dataset_root``, ``hf:<path>`` and ``folder:<path>``.

Every reader is a :class:`~bcos_clip.data.readers.protocol.BenchmarkReader`: ``name``, ``root``,
``classnames`` (None for retrieval), ``templates``, ``kind`` (classification | multilabel | retrieval),
``has_split(split)`` and ``torch_dataset(split, transform, rank, world_size)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from bcos_clip.data.readers.folder import open_image_folder
from bcos_clip.data.readers.hf import open_hf_benchmark
from bcos_clip.data.readers.protocol import BenchmarkReader
from bcos_clip.data.readers.wds import clean_dataset_name, open_wds_benchmark


def _open_wds(rest: str, dataset_root: Optional[str]) -> BenchmarkReader:
    if not dataset_root:
        raise ValueError(f"dataset wds/{rest}: --dataset_root is required for wds datasets")
    return open_wds_benchmark(f"wds/{rest}", dataset_root)


def _with_root(path: str, dataset_root: Optional[str]) -> str:
    """Relative ``hf:`` / ``folder:`` paths are tried under a plain (template-free) dataset root."""
    if Path(path).is_absolute() or Path(path).exists() or not dataset_root or "{" in dataset_root:
        return path
    return str(Path(dataset_root) / path)


READERS: Dict[str, Callable[[str, Optional[str]], BenchmarkReader]] = {
    "wds": _open_wds,
    "hf": lambda rest, root: open_hf_benchmark(_with_root(rest, root)),
    "folder": lambda rest, root: open_image_folder(_with_root(rest, root)),
}


def parse_spec(spec: str) -> Tuple[str, str]:
    """``wds/x`` or ``x`` -> (``wds``, ``x``); ``hf:p`` -> (``hf``, ``p``); ``folder:p`` likewise."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty --dataset")
    if spec.startswith("wds/"):
        return "wds", spec[len("wds/"):]
    if ":" in spec.split("/")[0]:
        kind, rest = spec.split(":", 1)
        if kind not in READERS:
            raise ValueError(f"unknown dataset {spec!r}: use wds/<name>, hf:<path> or folder:<path>")
        return kind, rest
    return "wds", spec


def dataset_name(spec: str) -> str:
    """The name results and reports use: ``vtab/cifar10`` for ``wds/vtab/cifar10``, the folder
    name for ``hf:`` / ``folder:`` paths."""
    kind, rest = parse_spec(spec)
    if kind == "wds":
        return clean_dataset_name(rest)[0]
    return Path(rest.rstrip("/")).name


def open_dataset(spec: str, dataset_root: Optional[str] = None) -> BenchmarkReader:
    """Open the reader for ``spec`` (no network; a missing folder is a FileNotFoundError)."""
    kind, rest = parse_spec(spec)
    return READERS[kind](rest, dataset_root)
