"""Numeric precision of evaluation forwards: ``fp32``, ``amp`` (fp16 autocast on CUDA, fp32 on CPU)
and ``amp_bf16`` (bf16 autocast on either device); open_clip's spellings."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

PRECISIONS = ("fp32", "amp", "amp_bf16")


def effective_precision(precision: str, device: torch.device) -> str:
    """What actually runs: ``amp`` on CPU is ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "amp" and torch.device(device).type != "cuda":
        return "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    eff = effective_precision(precision, device)
    if eff == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if eff == "amp" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
