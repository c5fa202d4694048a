"""Reports from a results folder: ``report.md`` (per task a grouped table, one column per model and
the difference of each to the first), ``report.csv`` (long format) and ``group_means.png``."""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bcos_clip.evaluation.plot import bar_chart
from bcos_clip.evaluation.report_tables import TaskTable, build_tables, ordered_groups
from bcos_clip.evaluation.results import read_results
from bcos_clip.evaluation.suite_files import load_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    csv: Path
    plot: Path


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _diff(v: Optional[float], ref: Optional[float]) -> str:
    return "–" if v is None or ref is None else f"{100 * (v - ref):+.2f}"


def _cell(table: TaskTable, row: Any, m: str) -> str:
    return "failed" if m in row.errors else _pct(row.values.get(m))


def table_markdown(table: TaskTable) -> List[str]:
    """Markdown lines of one task: dataset rows, then a bold mean row per group."""
    models, ref = table.models, table.models[0]
    head = ["group", "dataset"] + models + [f"Δ {m}" for m in models[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = table.group_means()
    for group in ordered_groups({r.group for r in table.rows}):
        for row in (r for r in table.rows if r.group == group):
            cells = [group, row.dataset] + [_cell(table, row, m) for m in models]
            cells += [_diff(row.values.get(m), row.values.get(ref)) for m in models[1:]]
            lines.append("| " + " | ".join(cells) + " |")
        cov = {m: table.coverage(group, m) for m in models}
        mean_cells = [f"**{_pct(means[group][m])}**" + ("" if cov[m][0] == cov[m][1] else
                                                        f" ({cov[m][0]}/{cov[m][1]})") for m in models]
        mean_cells += [f"**{_diff(means[group][m], means[group][ref])}**" for m in models[1:]]
        lines.append("| " + " | ".join([f"**{group}**", f"**mean of {cov[ref][1]}**"] + mean_cells) + " |")
    return lines


def render_markdown(tables: Sequence[TaskTable], source: str, n_files: int) -> str:
    lines = ["# Benchmark report", "",
             f"{n_files} result files from `{source}`. Values in %; Δ = model − {tables[0].models[0]} "
             "(the first column). Group means average the datasets a model has a result for "
             "((k/n) when some are missing or failed).", ""]
    for table in tables:
        lines += [f"## {table.task}", ""] + table_markdown(table) + [""]
        failed = [(m, r.dataset, e) for r in table.rows for m, e in r.errors.items()]
        if failed:
            lines += ["Failed:", ""] + [f"- {m} / {d}: {e}" for m, d, e in failed] + [""]
    return "\n".join(lines)


def write_csv(tables: Sequence[TaskTable], path: Path) -> Path:
    """Long format: task, group, dataset, metric, model, value, diff_to_first, status, error."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "group", "dataset", "metric", "model", "value", "diff_to_first", "status", "error"])
        for t in tables:
            ref = t.models[0]
            for r in t.rows:
                for m in t.models:
                    v, rv = r.values.get(m), r.values.get(ref)
                    status = "failed" if m in r.errors else ("ok" if v is not None else "missing")
                    w.writerow([t.task, r.group, r.dataset, r.metric, m, "" if v is None else v,
                                "" if v is None or rv is None else v - rv, status, r.errors.get(m, "")])
            for g, vals in t.group_means().items():
                for m in t.models:
                    v, rv = vals[m], vals[ref]
                    w.writerow([t.task, g, "mean", "group_mean", m, "" if v is None else v,
                                "" if v is None or rv is None else v - rv, "ok" if v is not None else "missing", ""])
    return path


def build_report(results_dir: Path, out_dir: Path, models: Optional[Sequence[str]] = None,
                 groups: Optional[Dict[str, str]] = None, plot_backend: Optional[str] = None) -> ReportPaths:
    """Read every result JSON under ``results_dir`` and write report.md, report.csv and
    group_means.png into ``out_dir``. ``models`` (labels) fixes the column order (first = reference)."""
    records = read_results(Path(results_dir))
    if not records:
        others = sorted(Path(results_dir).rglob("*.json"))
        seen = f" ({len(others)} other JSON file(s), e.g. {others[0].name}: unreadable or not eval results)" if others \
            else ""
        raise FileNotFoundError(f"{results_dir}: no result JSON files of bcos-clip eval{seen}")
    tables = build_tables(records, load_groups() if groups is None else groups, models)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(render_markdown(tables, str(results_dir), len(records)), encoding="utf-8")
    csv_path = write_csv(tables, out / "report.csv")
    plot = bar_chart({t.task: t.group_means() for t in tables}, out / "group_means.png", plot_backend)
    log.info("report written to %s", out)
    return ReportPaths(md, csv_path, plot)
