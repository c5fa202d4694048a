"""The one timer of `bcos-clip bench` and the `benchmarks/` scripts: synchronised wall time, peak memory, rows.

`measure`: mean ms per call of `iters` back-to-back calls (after `warmup` calls), with CUDA events on
CUDA and perf_counter on CPU, and the peak memory of the timed calls (torch.cuda.max_memory_allocated;
None on CPU). `timed_once`: seconds of one synchronised call. `median_time`: the median of repeated
`timed_once` calls. Every bench measurement is a `Row` (a dict that goes into the JSON as is).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

log = logging.getLogger(__name__)
Row = Dict[str, Any]
GIB = float(1 << 30)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> Dict[str, Any]:
    """Mean milliseconds per call of fn (after warm-up) and the peak memory of the timed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        stop.record()
        stop.synchronize()
        ms = start.elapsed_time(stop) / iters
        peak: Optional[float] = torch.cuda.max_memory_allocated(device) / GIB
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        ms = (time.perf_counter() - t0) * 1000.0 / iters
        peak = None
    return {"ms": ms, "peak_mem_gib": peak}


def timed_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one synchronised call (compile warm-ups)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: Optional[Callable[[], Any]] = None,
                min_time: float = 2.0, max_runs: int = 50) -> float:
    """Median seconds of synchronised calls of fn, after one untimed call of ``warmup`` (default fn): at
    least ``repeats`` runs and, for short calls, more until ``min_time`` seconds were spent (at most
    ``max_runs``)."""
    (warmup or fn)()
    times: List[float] = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < max_runs):
        times.append(timed_once(fn, device))
    return statistics.median(times)


class Deadline:
    """A wall-clock budget for the whole run: rows that would start too late are skipped."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s

    def left(self) -> float:
        if self.budget_s <= 0:
            return float("inf")
        return self.budget_s - (time.perf_counter() - self.t0)

    def allows(self, need_s: float) -> bool:
        return self.left() >= need_s


@contextlib.contextmanager
def guarded(row: Row, device: torch.device) -> Iterator[Row]:
    """Run one row's measurement; any exception marks the row as an error instead of ending the run."""
    try:
        yield row
        row.setdefault("status", "ok")
    except Exception as exc:  # noqa: BLE001 - one failing row must not lose the others
        oom = isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
        row["status"] = "oom" if oom else "error"
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        frames = traceback.extract_tb(exc.__traceback__)[-4:]  # where it broke, for a run on a remote GPU
        row["error_at"] = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in frames]
        log.warning("bench row %s failed: %s", row.get("name"), row["error"])
        log.debug("%s", traceback.format_exc())
    finally:
        free_memory(device)


def skipped(row: Row, why: str) -> Row:
    row.update(status="skipped", note=why)
    return row


def throughput(row: Row, batch: int) -> Row:
    """Add images per second from ms per call of `batch` images."""
    if row.get("ms"):
        row["img_per_s"] = batch * 1000.0 / row["ms"]
    return row
