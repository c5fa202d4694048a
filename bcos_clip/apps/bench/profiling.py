"""Where the time goes: a torch.profiler top-ops table of one tower row (for missed targets)."""
from __future__ import annotations

from typing import Callable

import torch

from bcos_clip.apps.bench.timing import sync
from bcos_clip.apps.bench.towers import ModelSet, make_infer_step, make_train_step, tower_for


def profile_table(step: Callable[[], None], device: torch.device, iters: int = 3, row_limit: int = 18) -> str:
    """The top ops of `iters` calls of step (after one warm-up), sorted by device (or CPU) time."""
    step()
    sync(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(iters):
            step()
        sync(device)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=row_limit, max_name_column_width=60)


def profile_row(ms: ModelSet, variant: str, kind: str, batch: int, precision: str, compiled: bool) -> str:
    """Profile one tower row ('train' step or 'infer') of `variant`, eager or compiled."""
    run = ms.compiled[variant] if compiled else tower_for(ms, variant)
    if kind == "infer":
        step = make_infer_step(ms, variant, run, batch, precision)
    else:
        step = make_train_step(ms, variant, run, batch, precision, forward_only=kind == "train_fwd")
    return profile_table(step, ms.device)
