"""Run records on rank 0: ``metrics.jsonl`` (one JSON object per logged step), mirrored to the
``--report-to`` backends (TensorBoard, wandb: ``bcos_clip.train.reporters``)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional

from bcos_clip.runtime.runfiles import METRICS
from bcos_clip.train.reporters import RunInfo, open_sinks, parse_report_to

log = logging.getLogger(__name__)


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (a resumed run rewrites the steps the killed run logged)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    path.write_text("".join(k + "\n" for k in kept))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Appends step records to ``OUTPUT/metrics.jsonl``; mirrors their numbers to the ``report_to`` backends.

    Args:
        output: the run folder.
        enabled: False on ranks other than 0 (nothing is written).
        report_to: ``--report-to`` (``"tensorboard"``, ``"wandb,tensorboard"``, ``"all"``, ``""``).
        resume_step: a resumed run's step (later records of the killed run are dropped); None: a new file.
        run: what the backends are told about the run (default: just its folder).
    """

    def __init__(self, output: str, enabled: bool, report_to: str = "", resume_step: Optional[int] = None,
                 run: Optional[RunInfo] = None) -> None:
        self.enabled = enabled
        self.path = Path(output) / METRICS
        self.sinks: list = []
        if not enabled:
            return
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        elif self.path.exists():
            self.path.unlink()
        self.sinks = open_sinks(parse_report_to(report_to), run or RunInfo(output))

    def log(self, record: Dict[str, Any]) -> None:
        """record: must hold ``step``; its numbers go to the backends as ``train/<key>``."""
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        for sink in self.sinks:
            sink.log(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []
