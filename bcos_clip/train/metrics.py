"""Run records on rank 0: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional

from bcos_clip.runtime.runfiles import METRICS

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
    """Appends step records to ``OUTPUT/metrics.jsonl``; mirrors scalars to TensorBoard if asked."""

    def __init__(self, output: str, enabled: bool, report_to: str = "", resume_step: Optional[int] = None) -> None:
        self.enabled = enabled
        self.path = Path(output) / METRICS
        self.tb = None
        if not enabled:
            return
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        elif self.path.exists():
            self.path.unlink()
        if report_to == "tensorboard":
            self.tb = _tensorboard_writer(Path(output) / "tensorboard")

    def log(self, record: Dict[str, Any]) -> None:
        """record: must hold ``step``; numbers go to TensorBoard as ``train/<key>``."""
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RuntimeError("--report-to tensorboard needs the tensorboard package "
                           "(pip install tensorboard)") from exc
    return SummaryWriter(str(directory))
