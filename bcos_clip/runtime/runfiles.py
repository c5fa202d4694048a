"""The names and readers of the files runs leave behind, in one place.

A training run's folder (``bcos-clip train --output``)::

    train_config.json   the TrainConfig (also copied into every checkpoint folder)
    metrics.jsonl       one JSON object per logged step (a line cut by a kill is skipped when read)
    summary.json        the run summary, written when the run ends
    checkpoints/, tensorboard/

``world.json`` marks a shapes world (its arguments, generator version and status); evaluation result
records live in ``results/`` folders (one JSON per model, dataset and task; ``evaluation.results`` reads
them).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

TRAIN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
WORLD_MARKER = "world.json"
RESULTS_DIR = "results"


def read_jsonl(path: PathLike) -> List[Dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; [] when it does not exist. Lines that are not a
    JSON object (one cut by a kill) are skipped, with one warning."""
    path = Path(path)
    if not path.is_file():
        return []
    records, broken = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            broken += 1
    if broken:
        log.warning("%s: skipped %d line(s) that are not JSON objects", path, broken)
    return records


def read_metrics(run_dir: PathLike) -> List[Dict[str, Any]]:
    """The training log of the run in ``run_dir``: one dict per logged step ([] before the first)."""
    return read_jsonl(Path(run_dir) / METRICS)


def read_world_marker(root: PathLike) -> Optional[Dict[str, Any]]:
    """The shapes world's ``world.json`` under ``root``: None when absent, ``{"status": "corrupt"}``
    when it is not a JSON object."""
    path = Path(root) / WORLD_MARKER
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"status": "corrupt"}
    return data if isinstance(data, dict) else {"status": "corrupt"}


def world_args(root: PathLike) -> Dict[str, Any]:
    """The arguments a complete shapes world under ``root`` was built with; FileNotFoundError (no world)
    or ValueError (incomplete or corrupt) naming the marker."""
    marker = read_world_marker(root)
    path = Path(root) / WORLD_MARKER
    if marker is None or marker.get("status") == "corrupt":
        why = "missing" if marker is None else "not valid JSON"
        raise FileNotFoundError(f"{path}: not a built shapes world ({why}); run build_world first")
    if marker.get("status") != "complete":
        raise ValueError(f"{path}: the shapes world is incomplete (status {marker.get('status')!r}); rebuild it")
    return marker["args"]
