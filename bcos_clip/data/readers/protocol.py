"""What every evaluation reader is: a CLIP_benchmark ``wds/`` folder, a Hugging Face dataset or an image
folder, opened by ``registry.open_dataset`` and used by evaluation and localisation alike.

Samples of ``torch_dataset(split, transform)`` are ``(image (3, H, W) in [0, 1], target, key)`` with the
target an int (classification), a multi-hot float vector (multilabel) or a list of captions (retrieval).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch

KINDS = ("classification", "multilabel", "retrieval")


@dataclass(frozen=True)
class BenchmarkReader(abc.ABC):
    """One evaluation dataset: its name, folder, class names (None for retrieval), zero-shot templates
    (``{c}`` for the class name), kind (one of ``KINDS``) and its splits as torch datasets.

    The readers (``WdsBenchmark``, ``HfBenchmark``, ``ImageFolderBenchmark``) are frozen dataclasses
    that add their own fields after these."""

    name: str
    root: Path
    classnames: Optional[List[str]]
    templates: List[str]
    kind: str

    @abc.abstractmethod
    def has_split(self, split: str) -> bool:
        """Whether ``split`` ("test", "train", ...) exists."""

    @abc.abstractmethod
    def torch_dataset(self, split: str, transform: Callable, rank: int = 0,
                      world_size: int = 1) -> torch.utils.data.Dataset:
        """``split`` through ``transform`` (PIL -> (3, H, W) in [0, 1]); ``rank`` of ``world_size`` reads its part."""
