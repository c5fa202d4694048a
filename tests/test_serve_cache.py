"""The explorer's bounded LRU: entry and byte budgets, recency, counters."""
from __future__ import annotations

import torch

from bcos_clip.apps.serve.cache import LRUCache, nbytes


def test_entries_budget_evicts_least_recently_used():
    cache = LRUCache(max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats()["hits"] == 1 and cache.get("b") is None and cache.stats()["misses"] == 1


def test_byte_budget_counts_tensors_and_skips_oversized_values():
    cache = LRUCache(max_entries=10, max_bytes=1000)
    small = {"x": torch.zeros(100)}  # 400 bytes
    assert nbytes(small) == 400
    cache.put("a", small)
    cache.put("b", {"x": torch.zeros(100)})
    cache.put("c", {"x": torch.zeros(100)})  # 1200 > 1000: a goes
    assert "a" not in cache and len(cache) == 2 and cache.stats()["bytes"] == 800
    cache.put("big", torch.zeros(1000))  # larger than the whole budget: not kept, nothing evicted
    assert "big" not in cache and len(cache) == 2

