"""Numeric precision, open_clip's spellings: the one table for training, evaluation and benchmarks.

- ``fp32``: no autocast.
- ``amp``: float16 autocast + GradScaler on CUDA (on CPU: fp32, as float16 autocast is not useful there).
- ``amp_bf16``: bfloat16 autocast (CPU or CUDA), fp32 weights.
- ``bf16``: pure bfloat16 student weights and inputs (least memory; no fp32 master weights); training only.

Training resolves its ``--precision`` once (:func:`resolve_precision`); evaluation forwards take the
name and wrap each batch in :func:`autocast` (``EVAL_PRECISIONS``).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager, Optional, Sequence, Union

import torch

log = logging.getLogger(__name__)

# name -> (autocast dtype, weight dtype, GradScaler)
_TABLE = {
    "fp32": (None, torch.float32, False),
    "amp": (torch.float16, torch.float32, True),
    "amp_bf16": (torch.bfloat16, torch.float32, False),
    "bf16": (None, torch.bfloat16, False),
}
PRECISIONS = tuple(_TABLE)
EVAL_PRECISIONS = ("fp32", "amp", "amp_bf16")  # forwards only: pure bf16 weights are a training choice
Device = Union[torch.device, str]


@dataclass(frozen=True)
class Precision:
    """What a ``--precision`` means on one device."""

    name: str
    device_type: str
    autocast_dtype: Optional[torch.dtype]
    weight_dtype: torch.dtype
    use_scaler: bool

    def autocast(self) -> ContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def make_scaler(self) -> Optional["torch.amp.GradScaler"]:
        return torch.amp.GradScaler("cuda") if self.use_scaler else None


def _resolve(name: str, device: Device, choices: Sequence[str]) -> Precision:
    if name not in choices:
        raise ValueError(f"--precision {name!r}: choose one of {', '.join(choices)}")
    device_type = torch.device(device).type
    if name == "amp" and device_type != "cuda":
        name = "fp32"
    autocast_dtype, weight_dtype, scaler = _TABLE[name]
    return Precision(name, device_type, autocast_dtype, weight_dtype, scaler)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The :class:`Precision` of a training ``name`` (any of ``PRECISIONS``) on ``device``."""
    if name == "amp" and device.type != "cuda":
        log.info("--precision amp on CPU runs in fp32")
    return _resolve(name, device, PRECISIONS)


def effective_precision(name: str, device: Device) -> str:
    """What an evaluation forward actually runs: ``amp`` on CPU is ``fp32``."""
    return _resolve(name, device, EVAL_PRECISIONS).name


def autocast(name: str, device: Device) -> ContextManager:
    """The autocast context of an evaluation ``name`` on ``device`` (a no-op for fp32)."""
    return _resolve(name, device, EVAL_PRECISIONS).autocast()


def teacher_dtype(device: torch.device) -> torch.dtype:
    """The frozen teacher runs in bfloat16 on GPU, float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32
