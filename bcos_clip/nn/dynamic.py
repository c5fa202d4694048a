"""Dynamic factors: the input-dependent parts of a B-cos network's dynamic linear map.

Every module whose output is W(x)·x with a data-dependent W(x) computes that dependence through
`DynamicModule.dynamic`. Three switches act on all such modules of a model:
- detach (explanation mode): the factor is detached, so input gradients are rows of W(x);
- record: the factor of the current pass is kept;
- replay: the kept factor is used instead of computing one (for the bias pass with input 0).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Optional

import torch
from torch import nn


class DynamicModule(nn.Module):
    """Mixin base for modules with dynamic (input-dependent) factors."""

    detach_dynamic: bool = False
    _dyn_mode: Optional[str] = None

    def dynamic(self, compute: Callable[[], torch.Tensor], key: str = "f") -> torch.Tensor:
        """Return the dynamic factor `compute()`, detached / recorded / replayed as the switches say."""
        if self._dyn_mode == "replay":
            try:
                return self.__dict__["_dyn_cache"][key]
            except KeyError as exc:
                raise RuntimeError(f"{type(self).__name__}: no recorded factor '{key}' to replay") from exc
        f = compute()
        if self.detach_dynamic:
            f = f.detach()
        if self._dyn_mode == "record":
            self.__dict__.setdefault("_dyn_cache", {})[key] = f.detach()
        return f


def dynamic_modules(model: nn.Module) -> Iterator[DynamicModule]:
    for m in model.modules():
        if isinstance(m, DynamicModule):
            yield m


@contextlib.contextmanager
def explanation_mode(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Detach every dynamic factor of `model` (restored on exit, also on exceptions)."""
    mods = list(dynamic_modules(model))
    before: Dict[int, bool] = {id(m): m.detach_dynamic for m in mods}
    try:
        for m in mods:
            m.detach_dynamic = enabled
        yield model
    finally:
        for m in mods:
            m.detach_dynamic = before[id(m)]


@contextlib.contextmanager
def dynamic_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Set the record/replay mode of all dynamic modules; replay needs a recorded pass first."""
    if mode not in ("record", "replay"):
        raise ValueError(f"dynamic mode must be 'record' or 'replay', got {mode!r}")
    mods = list(dynamic_modules(model))
    try:
        for m in mods:
            m._dyn_mode = mode
            if mode == "record":
                m.__dict__["_dyn_cache"] = {}
        yield model
    finally:
        for m in mods:
            m._dyn_mode = None


def clear_recorded(model: nn.Module) -> None:
    """Drop every recorded factor (frees memory after an explanation)."""
    for m in dynamic_modules(model):
        m.__dict__.pop("_dyn_cache", None)
