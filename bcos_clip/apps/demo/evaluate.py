"""The demo's evaluation stages: teacher and students on the demo suite (eval/suites/demo.yaml).

Each model is one stage (``eval_<label>``) whose results live in ``<eval>/results/<label>/`` as the
usual result JSON files; its arguments are the model's digest and the suite entries, so a retrained
student is evaluated again and an unchanged one is not. ``build_report`` then reads the whole results
folder. Numbers come back as ``{task: {dataset: metrics}}`` plus the group means of each task.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bcos_clip.apps.demo.settings import EvalSettings
from bcos_clip.apps.demo.stages import StageRunner
from bcos_clip.data.shapes.writer import WorldPaths
from bcos_clip.evaluation import EvalConfig, ModelHandle, ProbeConfig, load_suite, run_suite
from bcos_clip.evaluation.suite_files import Suite
from bcos_clip.runtime.runfiles import RESULTS_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoModel:
    """A model the demo evaluates: its label (report column), how to load it, and its weights' digest.

    model / pretrained: a checkpoint directory (B-cos) or a teacher JSON config + weights file.
    """

    label: str
    model: str
    pretrained: Optional[str]
    digest: str
    kind: str  # "teacher", "student", "bcosified" (not distilled)


def suite_for(name: str, tasks: Optional[Sequence[str]] = None) -> Suite:
    """The suite ``name`` (a shipped name or a file), keeping only ``tasks`` when given."""
    suite = load_suite(name)
    if tasks is None:
        return suite
    entries = tuple(e for e in suite.entries if e.task in tasks)
    if not entries:
        raise ValueError(f"suite {name!r} has no entries for tasks {list(tasks)}")
    return replace(suite, entries=entries)


def eval_config(eval_dir: Path, label: str, world: WorldPaths, settings: EvalSettings, device: str) -> EvalConfig:
    """Results of ``label`` under ``eval_dir/results/<label>``; one shared feature/classifier cache."""
    probe = ProbeConfig(epochs=settings.probe_epochs, device=device)
    return EvalConfig(output=str(eval_dir / RESULTS_DIR / label), dataset_root=str(world.wds_root / "{dataset}"),
                      cache_dir=str(eval_dir / "cache"), batch_size=settings.batch_size,
                      workers=0, device=device, probe=probe)


def _load(m: DemoModel, device: str) -> Any:
    from bcos_clip.models import resolve_model

    return resolve_model(m.model, m.pretrained).to(device).eval()


def _records(records: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """{task: {dataset: {"group", "metrics", "status"[, "error"]}}} of one model's records."""
    out: Dict[str, Dict[str, Any]] = {}
    for r in records:
        row = {"group": r.get("group"), "metrics": r.get("metrics") or {}, "status": r.get("status", "ok")}
        if r.get("error"):
            row["error"] = r["error"]
        out.setdefault(r["task"], {})[r["dataset"]] = row
    return out


def evaluate_model(runner: StageRunner, eval_dir: Path, m: DemoModel, world: WorldPaths, suite: Suite,
                   settings: EvalSettings, device: str) -> Dict[str, Dict[str, Any]]:
    """Evaluate one model on ``suite`` (or reuse its results). Returns {task: {dataset: row}}."""
    cfg = eval_config(eval_dir, m.label, world, settings, device)
    entries = [(e.dataset, e.task, e.group) for e in suite.entries]
    args = {"model": asdict(m), "entries": entries, "probe": asdict(cfg.probe), "world": str(world.root),
            "batch_size": cfg.batch_size}

    def work() -> Dict[str, Any]:
        handle = ModelHandle(_load(m, device), m.model, m.pretrained, m.label)
        records = run_suite(suite, cfg, models=[handle])
        failed = [f"{r['dataset']}/{r['task']}: {r.get('error')}" for r in records if r.get("status") == "failed"]
        if failed:
            raise RuntimeError(f"evaluation of {m.label} failed: " + "; ".join(failed))
        return _records(records)

    return runner.run(f"eval_{m.label}", args, work, clear=[Path(cfg.output)])


def group_means(results: Dict[str, Dict[str, Any]], task: str, metric: str = "acc1") -> Dict[str, float]:
    """{group: mean of ``metric`` over the datasets of that group} for one task of one model."""
    sums: Dict[str, Tuple[float, int]] = {}
    for row in results.get(task, {}).values():
        value = row["metrics"].get(metric)
        if value is None or row.get("group") is None:
            continue
        s, n = sums.get(row["group"], (0.0, 0))
        sums[row["group"]] = (s + float(value), n + 1)
    return {g: s / n for g, (s, n) in sums.items()}
