"""The run's text log: ``OUTPUT/out.log`` (open_clip_train's ``<logs>/<name>/out.log``) and its progress line.

While a run lasts, rank 0 copies every record of the ``bcos_clip`` loggers that the logging setup lets
through (the CLI: INFO and up) to ``out.log``, appending, so a resumed run continues the same file.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
from pathlib import Path
from typing import Any, ContextManager, Iterator, Mapping

from tqdm.contrib.logging import logging_redirect_tqdm

OUT_LOG = "out.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def run_log_file(output: str, enabled: bool) -> Iterator[None]:
    """Copy ``bcos_clip`` log records to ``output/out.log`` inside the block (``enabled``: rank 0)."""
    if not enabled:
        yield
        return
    Path(output).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(output) / OUT_LOG, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("bcos_clip")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def log_lines_above_bars() -> ContextManager:
    """Inside the block, console log lines go through ``tqdm.write`` (above a progress bar, not through it);
    nothing changes when the root logger has no console handler (tqdm would add one)."""
    console = any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr)
                  for h in logging.getLogger().handlers)
    return logging_redirect_tqdm([logging.getLogger()]) if console else contextlib.nullcontext()


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else str(value)


def progress_line(record: Mapping[str, Any], total_steps: int) -> str:
    """``step 200/1000 (20%), epoch 0: loss 0.1234, lr 1.000e-04, grad_norm 0.5, 812.3 samples/s``.

    record: a metrics record (``step``, ``epoch``, ``loss``, ``lr``, ``grad_norm``, ``samples_per_s``).
    """
    step = int(record["step"])
    return (f"step {step}/{total_steps} ({100.0 * step / max(total_steps, 1):.0f}%), epoch {record['epoch']}: "
            f"loss {_number(record['loss'], '.4g')}, lr {_number(record['lr'], '.3e')}, "
            f"grad_norm {_number(record['grad_norm'], '.3g')}, {_number(record['samples_per_s'], '.1f')} samples/s")
