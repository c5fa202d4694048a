"""Benchmarks: zero-shot classification / retrieval and linear probes over CLIP_benchmark ``wds``
folders, HF datasets and image folders; suites; JSON results; reports.

Main entry points: :func:`evaluate` (one model, dataset, task), :func:`run_suite`,
:func:`load_suite`, :func:`build_report`. Names are imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EvalConfig": "tasks", "ModelHandle": "tasks", "TASKS": "tasks", "evaluate": "tasks",
    "ProbeConfig": "linear_probe", "Suite": "suite_files", "SuiteEntry": "suite_files",
    "ModelSpec": "suite_files", "load_suite": "suite_files", "load_groups": "suite_files",
    "run_suite": "suite", "build_report": "report", "ReportPaths": "report",
    "read_results": "results", "open_dataset": "datasets", "build_classifier": "classifier",
    "cached_classifier": "classifier",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bcos_clip.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bcos_clip.evaluation.{_EXPORTS[name]}"), name)
