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
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from bcos_clip.evaluation.results import TASK_NAMES

PACKAGE = "bcos_clip.eval_suites"


@dataclass(frozen=True)
class SuiteEntry:
    dataset: str  # spec: a wds name (no ``wds/``), ``hf:<path>`` or ``folder:<path>``
    task: str
    group: Optional[str] = None
    dataset_root: Optional[str] = None


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
    base = resources.files(PACKAGE)
    for r in rels:
        node = base.joinpath(*r.split("/"))
        if node.is_file():
            return node.read_text(encoding="utf-8"), f"{PACKAGE}:{r}"
    raise FileNotFoundError(f"suite/table {name!r} not found as a file or in {PACKAGE} (tried {rels})")


def _entries(item: Dict[str, Any], default_tasks: Sequence[str], where: str) -> List[SuiteEntry]:
    if not isinstance(item, dict) or "name" not in item:
        raise ValueError(f"{where}: each datasets entry needs a 'name' (got {item!r})")
    tasks = item.get("tasks", item.get("task", default_tasks))
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise ValueError(f"{where}: dataset {item['name']!r} has no tasks")
    bad = [t for t in tasks if t.replace("-", "_") not in TASK_NAMES]
    if bad:
        raise ValueError(f"{where}: dataset {item['name']!r}: unknown task(s) {bad} "
                         f"(choose from {', '.join(TASK_NAMES)})")
    return [SuiteEntry(str(item["name"]), t.replace("-", "_"), item.get("group"), item.get("dataset_root"))
            for t in tasks]


def load_suite(name: str) -> Suite:
    """Parse a suite YAML (see the module docstring)."""
    text, where = read_resource_text(name)
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise ValueError(f"{where}: a suite needs a 'datasets' list")
    default_tasks = data.get("tasks", ["zeroshot_classification"])
    entries = [e for item in data["datasets"] for e in _entries(item, default_tasks, where)]
    models = tuple(ModelSpec(str(m["model"]), m.get("pretrained"), m.get("label"))
                   for m in data.get("models") or [])
    return Suite(str(data.get("name", Path(where).stem)), tuple(entries), models, data.get("dataset_root"))


def load_groups(table: str = "dataset_type.csv") -> Dict[str, str]:
    """{dataset name (no ``wds/``): group} from a ``dataset,type`` CSV (CLIP_benchmark's format)."""
    text, where = read_resource_text(table, default_dir=".", suffix=".csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"dataset", "type"} <= set(rows[0]):
        raise ValueError(f"{where}: expected columns 'dataset,type'")
    return {r["dataset"].strip(): r["type"].strip() for r in rows if r.get("dataset")}
