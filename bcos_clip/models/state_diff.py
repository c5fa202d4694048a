"""Readable state-dict mismatches: missing / unexpected keys and shape mismatches in one line.

Shared by checkpoint loading, load_clip (open_clip and transformers weights) and the importers, so
that every weight mismatch reads the same and the CLI can print it as one line.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class CheckpointMismatchError(RuntimeError):
    """The weights on disk do not fit the model the config describes."""


def key_diff(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """A readable diff of two state dicts ('' when they fit)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, found {tuple(found[k].shape)}"
              for k in sorted(set(expected) & set(found)) if expected[k].shape != found[k].shape]
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
            parts.append(f"{len(items)} {title}: {shown}")
    return "; ".join(parts)


def load_weights_strict(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load `state` into `module`; any mismatch raises CheckpointMismatchError naming `where`."""
    diff = key_diff(module.state_dict(), state)
    if diff:
        raise CheckpointMismatchError(f"{where} does not fit the model: {diff}")
    module.load_state_dict(state, strict=True)
