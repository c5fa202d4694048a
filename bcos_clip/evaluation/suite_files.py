"""Benchmark suites (YAML in the top-level ``eval/``, shipped as ``bcos_clip.eval_suites``) and the
dataset grouping table; running many (model, dataset, task) with failed rows instead of crashes.

Suite YAML::

    name: demo
    dataset_root: null               # optional default root ({dataset} / {dataset_cleaned} allowed)
    tasks: [zeroshot_classification] # default tasks of entries without their own
    models:                          # optional; --model on the command line replaces them
      - {model: RN50, pretrained: openai, label: teacher}
    datasets:
      - {name: vtab/cifar10, group: natural, tasks: [zeroshot_classification, linear_probe]}
      - {name: "hf:/data/my_set", group: natural}
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bcos_clip.evaluation.results import TASK_NAMES
from bcos_clip.runtime.resources import EVAL_SUITES, resource_root
from bcos_clip.runtime.yaml_io import load_yaml

PACKAGE = EVAL_SUITES


@dataclass(frozen=True)
class SuiteEntry:
    """One (dataset, task) of a suite. ``dataset``: ``wds/<name>``, a bare wds name, ``hf:<path>`` or
    ``folder:<path>`` (written to records as given); ``task`` may be ``auto``; the optional split
    settings (CLIP_benchmark's per-dataset ``--train_split`` / ``--val_split`` / ``--val_proportion``)
    and ``language`` override the run's."""

    dataset: str
    task: str
    group: Optional[str] = None
    dataset_root: Optional[str] = None
    train_split: Optional[str] = None
    val_split: Optional[str] = None
    val_proportion: Optional[float] = None
    language: Optional[str] = None


@dataclass(frozen=True)
class ModelSpec:
    model: str
    pretrained: Optional[str] = None
    label: Optional[str] = None


@dataclass(frozen=True)
class Suite:
    name: str
    entries: Tuple[SuiteEntry, ...]
    models: Tuple[ModelSpec, ...] = ()
    dataset_root: Optional[str] = None


def read_resource_text(name: str, default_dir: str = "suites", suffix: str = ".yaml") -> Tuple[str, str]:
    """(text, where) of a suite or table: a filesystem path first, then ``eval/<...>`` inside the
    installed package (``eval/suites/demo.yaml``, ``suites/demo.yaml`` and ``demo`` all work)."""
    path = Path(name)
    for cand in (path, path.with_suffix(suffix) if not path.suffix else path):
        if cand.is_file():
            return cand.read_text(encoding="utf-8"), str(cand)
    rel = name[len("eval/"):] if name.startswith("eval/") else name
    rels = [rel, f"{default_dir}/{rel}", f"{default_dir}/{rel}{suffix}", f"{rel}{suffix}"]
    base = resource_root(PACKAGE)
    for r in rels:
        node = base.joinpath(*r.split("/"))
        if node.is_file():
            return node.read_text(encoding="utf-8"), f"{PACKAGE}:{r}"
    raise FileNotFoundError(f"suite/table {name!r} not found as a file or in {PACKAGE} (tried {rels})")


SUITE_KEYS = ("name", "dataset_root", "tasks", "models", "datasets")
ENTRY_KEYS = ("name", "group", "tasks", "task", "dataset_root")
MODEL_KEYS = ("model", "pretrained", "label")


def _mapping(item: Any, keys: Sequence[str], what: str, where: str) -> Dict[str, Any]:
    """``item`` as a mapping with only ``keys`` (unknown keys named), else ValueError naming ``where``."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: {what} must be a mapping, got {item!r}")
    unknown = sorted(str(k) for k in set(item) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} in {what} "
                         f"(known: {', '.join(keys)})")
    return item


def _optional_str(item: Dict[str, Any], key: str, where: str) -> Optional[str]:
    value = item.get(key)
    if value is not None and not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: {key!r} must be a string, got {value!r}")
    return None if value is None else str(value)


def _tasks(value: Any, name: str, where: str) -> List[str]:
    tasks = [value] if isinstance(value, str) else value
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"{where}: tasks of {name!r} must be a task name or a list of them, got {value!r}")
    if not tasks:
        raise ValueError(f"{where}: dataset {name!r} has no tasks")
    bad = [t for t in tasks if t.replace("-", "_") not in TASK_NAMES]
    if bad:
        raise ValueError(f"{where}: dataset {name!r}: unknown task(s) {bad} (choose from {', '.join(TASK_NAMES)})")
    return [t.replace("-", "_") for t in tasks]


def _entries(item: Any, default_tasks: Any, where: str) -> List[SuiteEntry]:
    if not isinstance(item, dict) or "name" not in item:
        raise ValueError(f"{where}: each datasets entry needs a 'name' (got {item!r})")
    item = _mapping(item, ENTRY_KEYS, "a datasets entry", where)
    name = str(item["name"])
    tasks = _tasks(item.get("tasks", item.get("task", default_tasks)), name, where)
    group, root = _optional_str(item, "group", where), _optional_str(item, "dataset_root", where)
    return [SuiteEntry(name, t, group, root) for t in tasks]


def _model(item: Any, where: str) -> ModelSpec:
    item = _mapping(item, MODEL_KEYS, "a models entry", where)
    if "model" not in item:
        raise ValueError(f"{where}: each models entry needs a 'model' (got {item!r})")
    return ModelSpec(str(item["model"]), _optional_str(item, "pretrained", where), _optional_str(item, "label", where))


def load_suite(name: str) -> Suite:
    """Parse a suite YAML (see the module docstring); a malformed file raises naming it and the key."""
    text, where = read_resource_text(name)
    data = _mapping(load_yaml(text, where) or {}, SUITE_KEYS, "the suite", where)  # errors name the file
    if not isinstance(data.get("datasets"), list):
        raise ValueError(f"{where}: a suite needs a 'datasets' list")
    default_tasks = data.get("tasks", ["zeroshot_classification"])
    entries = [e for item in data["datasets"] for e in _entries(item, default_tasks, where)]
    models = data.get("models") or []
    if not isinstance(models, list):
        raise ValueError(f"{where}: 'models' must be a list of mappings, got {models!r}")
    return Suite(str(data.get("name", Path(where).stem)), tuple(entries), tuple(_model(m, where) for m in models),
                 _optional_str(data, "dataset_root", where))


def load_groups(table: str = "dataset_type.csv") -> Dict[str, str]:
    """{dataset name (no ``wds/``): group} from a ``dataset,type`` CSV (CLIP_benchmark's format)."""
    text, where = read_resource_text(table, default_dir=".", suffix=".csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"dataset", "type"} <= set(rows[0]):
        raise ValueError(f"{where}: expected columns 'dataset,type'")
    return {r["dataset"].strip(): r["type"].strip() for r in rows if r.get("dataset")}
