"""Training precision (open_clip's spellings), also the one table of evaluation and benchmark forwards.

- ``auto`` (the default): on CUDA ``amp_bf16`` where the GPU computes bf16 natively (Ampere and newer:
  same exponent range as fp32, no loss scaling needed), else ``amp`` (float16 + GradScaler); on CPU fp32.
- ``fp32``: no autocast.
- ``amp``: float16 autocast + GradScaler on CUDA (on CPU: fp32, as float16 autocast is not useful there).
- ``amp_bf16``: bfloat16 autocast (CPU or CUDA), fp32 weights.
- ``bf16``: pure bfloat16 student weights and inputs (least memory; no fp32 master weights).

Training resolves its ``--precision`` once (:func:`resolve_precision`); evaluation forwards take the
name and wrap each batch in :func:`autocast` (``EVAL_PRECISIONS``: pure bf16 weights are a training choice).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager, Optional, Sequence, Union

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "amp", "amp_bf16", "bf16")
EVAL_PRECISIONS = ("fp32", "amp", "amp_bf16")


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


def _auto(device: torch.device) -> str:
    if device.type != "cuda":
        return "fp32"
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return "amp_bf16" if bf16 else "amp"


def resolve_precision(name: str, device: Union[torch.device, str], choices: Sequence[str] = PRECISIONS,
                      quiet: bool = False) -> Precision:
    """The :class:`Precision` of ``name`` (one of ``choices``) on ``device``; ``quiet``: no log line."""
    if name not in choices:
        raise ValueError(f"--precision {name!r}: choose one of {', '.join(choices)}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if name == "auto":
        name = _auto(device)
        if not quiet:
            log.info("--precision auto on %s: %s", device.type, name)
    if name == "amp" and not cuda:
        if not quiet:
            log.info("--precision amp on CPU runs in fp32")
        name = "fp32"
    table = {
        "fp32": (None, torch.float32, False),
        "amp": (torch.float16, torch.float32, True),
        "amp_bf16": (torch.bfloat16, torch.float32, False),
        "bf16": (None, torch.bfloat16, False),
    }
    autocast_dtype, weight_dtype, scaler = table[name]
    return Precision(name, device.type, autocast_dtype, weight_dtype, scaler)


def effective_precision(name: str, device: Union[torch.device, str]) -> str:
    """What an evaluation forward actually runs: ``amp`` on CPU is ``fp32``."""
    return resolve_precision(name, device, EVAL_PRECISIONS, quiet=True).name


def autocast(name: str, device: Union[torch.device, str]) -> ContextManager:
    """The autocast context of an evaluation ``name`` on ``device`` (a no-op for fp32)."""
    return resolve_precision(name, device, EVAL_PRECISIONS, quiet=True).autocast()


def teacher_dtype(device: torch.device) -> torch.dtype:
    """The frozen teacher runs in bfloat16 on GPU, float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32
