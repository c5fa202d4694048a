"""Result records -> per-task tables: datasets grouped natural / specialized / structured (then any
other group), one column per model, group means, and each model's difference to the first."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bcos_clip.data.readers.registry import dataset_name

GROUP_ORDER = ("natural", "specialized", "structured", "retrieval", "other")
TASK_ORDER = ("zeroshot_classification", "linear_probe", "zeroshot_retrieval")
# (metric key, row suffix) per task; classification falls back to mAP for multilabel datasets, linear
# probes read CLIP_benchmark's lp_acc1 (records of earlier bcos-clip versions: acc1).
TASK_METRICS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "zeroshot_classification": (("acc1", ""), ("mean_average_precision", " (mAP)")),
    "linear_probe": (("lp_acc1", ""),),
    "zeroshot_retrieval": (("image_retrieval_recall@5", " (image R@5)"),
                           ("text_retrieval_recall@5", " (text R@5)")),
}


@dataclass
class Row:
    """One dataset (and metric) of a task table: value per model label (None = missing/failed)."""

    group: str
    dataset: str
    metric: str
    values: Dict[str, Optional[float]] = field(default_factory=dict)
    errors: Dict[str, str] = field(default_factory=dict)


@dataclass
class TaskTable:
    task: str
    models: List[str]
    rows: List[Row]

    def group_means(self) -> Dict[str, Dict[str, Optional[float]]]:
        """{group: {model: mean over that group's rows with a value (None if none)}}."""
        out: Dict[str, Dict[str, Optional[float]]] = {}
        for group in ordered_groups({r.group for r in self.rows}):
            rows = [r for r in self.rows if r.group == group]
            out[group] = {}
            for m in self.models:
                vals = [r.values[m] for r in rows if r.values.get(m) is not None]
                out[group][m] = sum(vals) / len(vals) if vals else None
        return out

    def coverage(self, group: str, model: str) -> Tuple[int, int]:
        """(rows with a value, rows) of ``group`` for ``model``."""
        rows = [r for r in self.rows if r.group == group]
        return sum(r.values.get(model) is not None for r in rows), len(rows)


def ordered_groups(groups: Sequence[str]) -> List[str]:
    known = [g for g in GROUP_ORDER if g in groups]
    return known + sorted(g for g in groups if g not in GROUP_ORDER)


def model_order(records: Sequence[Dict[str, Any]], models: Optional[Sequence[str]] = None) -> List[str]:
    """Column order: ``models`` if given (labels), else plain (teacher) models before B-cos ones,
    each alphabetical; the first column is the reference for the differences."""
    labels = {r["model_label"]: bool(r.get("is_bcos", False)) for r in records}
    if models:
        unknown = [m for m in models if m not in labels]
        if unknown:
            raise ValueError(f"--models {unknown}: no results for these (have {sorted(labels)})")
        return list(models)
    return sorted(labels, key=lambda m: (labels[m], m))


def display_name(dataset: str) -> str:
    """The row name of a record's ``dataset``: the name without ``wds/`` (records keep it as given),
    an ``hf:`` / ``folder:`` dataset's folder name."""
    try:
        return dataset_name(str(dataset))
    except ValueError:
        return str(dataset)


def _record_group(rec: Dict[str, Any], groups: Dict[str, str]) -> str:
    if rec.get("group"):
        return str(rec["group"])
    if rec["task"] == "zeroshot_retrieval":
        return "retrieval"
    return groups.get(display_name(rec["dataset"]), "other")


def _rows_of(rec: Dict[str, Any], task: str) -> List[Tuple[str, str, Optional[float]]]:
    """(metric, suffix, value) rows a record contributes (failed records: the first metric)."""
    metrics = rec.get("metrics") or {}
    spec = TASK_METRICS.get(task, ((next(iter(metrics), "value"), ""),))
    if task == "zeroshot_classification":
        key = "mean_average_precision" if "mean_average_precision" in metrics else "acc1"
        spec = tuple(s for s in spec if s[0] == key)
    if task == "linear_probe" and "lp_acc1" not in metrics:  # an earlier bcos-clip record: acc1
        return [("lp_acc1", "", metrics.get("acc1"))]
    return [(k, suffix, metrics.get(k)) for k, suffix in spec]


def build_tables(records: Sequence[Dict[str, Any]], groups: Dict[str, str],
                 models: Optional[Sequence[str]] = None) -> List[TaskTable]:
    """One TaskTable per task present in ``records``, rows sorted by group then dataset."""
    order = model_order(records, models)
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in records)]
    tasks += sorted({r["task"] for r in records} - set(tasks))
    tables = []
    for task in tasks:
        rows: Dict[Tuple[str, str], Row] = {}
        for rec in (r for r in records if r["task"] == task and r["model_label"] in order):
            group = _record_group(rec, groups)
            for metric, suffix, value in _rows_of(rec, task):
                name = display_name(rec["dataset"]) + suffix
                row = rows.setdefault((name, metric), Row(group, name, metric))
                row.values[rec["model_label"]] = value if rec.get("status", "ok") == "ok" else None
                if rec.get("status", "ok") != "ok":
                    row.errors[rec["model_label"]] = str(rec.get("error", "failed"))
        group_rank = {g: i for i, g in enumerate(ordered_groups({r.group for r in rows.values()}))}
        sorted_rows = sorted(rows.values(), key=lambda r: (group_rank[r.group], r.dataset))
        tables.append(TaskTable(task, order, sorted_rows))
    return tables
