"""A bounded, thread-safe LRU cache with hit/miss counters (entries and an optional byte budget).

The explorer keeps one per-image state (the contribution tensor of a B-cos image, the teacher's per-prompt
baseline maps) per key; a new prompt on a cached image then never runs the image tower.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Generic, Hashable, Optional, Tuple, TypeVar

import torch

V = TypeVar("V")


def nbytes(value: Any) -> int:
    """Bytes held by the tensors in a value (a tensor, an object with tensor attributes, or containers)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dict__"):
        return sum(nbytes(v) for v in vars(value).values() if isinstance(v, (torch.Tensor, dict, list, tuple)))
    return 0


class LRUCache(Generic[V]):
    """At most `max_entries` values and (if given) `max_bytes` bytes of tensors; least recently used go first.

    A value larger than the whole byte budget is still returned to the caller but not kept.
    """

    def __init__(self, max_entries: int, max_bytes: Optional[int] = None,
                 size_of: Callable[[Any], int] = nbytes) -> None:
        if max_entries < 0:
            raise ValueError(f"cache size must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._data: "OrderedDict[Hashable, Tuple[V, int]]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable) -> Optional[V]:
        """The value (now most recent) or None; counts a hit or a miss."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            size = self._size_of(value)
            if key in self._data:
                self._bytes -= self._data.pop(key)[1]
            if self.max_entries == 0 or (self.max_bytes is not None and size > self.max_bytes):
                return
            self._data[key] = (value, size)
            self._bytes += size
            self._evict()

    def _evict(self) -> None:
        while len(self._data) > self.max_entries or (self.max_bytes is not None and self._bytes > self.max_bytes):
            _, (_, size) = self._data.popitem(last=False)
            self._bytes -= size

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            return {"entries": len(self._data), "max_entries": self.max_entries, "bytes": self._bytes,
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}
