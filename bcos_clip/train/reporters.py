"""Where a run's scalars go besides ``metrics.jsonl``: TensorBoard and Weights & Biases (``--report-to``).

``--report-to`` takes open_clip_train's comma-separated list (``wandb``, ``tensorboard``, ``wandb,tensorboard``,
``all`` = both). Each backend's package is checked before any work (:func:`check_reporters`, one line naming
the extra); sinks are opened on rank 0 by :class:`~bcos_clip.train.metrics.MetricsLogger`.

wandb runs as open_clip_train starts it: project ``--wandb-project-name``, run name and id the run folder's
name, the whole config, ``resume="allow"`` when the run is resumed; its files go to ``OUTPUT/wandb/``. Without
network set ``WANDB_MODE=offline`` (and later ``wandb sync OUTPUT/wandb/offline-run-*``).
"""
from __future__ import annotations

import importlib.util
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Tuple

log = logging.getLogger(__name__)

REPORTERS = ("tensorboard", "wandb")
# backend -> (module to import, how to get it)
REQUIREMENTS = {"tensorboard": ("tensorboard", "pip install tensorboard"),
                "wandb": ("wandb", "pip install 'bcos_clip[wandb]'")}
_REFUSED = {"trackio": "trackio (open_clip_train's local wandb twin) is not supported; use wandb with "
                       "WANDB_MODE=offline, or tensorboard"}


def parse_report_to(text: str) -> Tuple[str, ...]:
    """``"wandb,tensorboard"`` -> ``("tensorboard", "wandb")``; ``all`` is both; ``""`` none. Unknown names
    raise ValueError naming the flag."""
    names = {n.strip() for n in str(text).split(",") if n.strip()}
    if "all" in names:
        names = (names - {"all"}) | set(REPORTERS)
    for name in sorted(names):
        if name in _REFUSED:
            raise ValueError(f"--report-to {text}: {_REFUSED[name]}")
        if name not in REPORTERS:
            raise ValueError(f"--report-to {text!r}: {name!r} is not one of {', '.join(REPORTERS)}, all "
                             "(comma-separated)")
    return tuple(n for n in REPORTERS if n in names)


def check_reporters(names: Tuple[str, ...]) -> None:
    """Before any work: every backend in ``names`` can be imported, else one RuntimeError line naming the extra."""
    for name in names:
        module, how = REQUIREMENTS[name]
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"--report-to {name} needs the {module} package, which is not installed: {how}")


@dataclass(frozen=True)
class RunInfo:
    """What a sink is told about the run: its folder, name (the folder's name), settings and whether it resumes."""

    output: str
    config: Dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    wandb_project: str = "bcos-clip"
    wandb_notes: str = ""

    @property
    def name(self) -> str:
        return Path(self.output).resolve().name


def scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """The finite numbers of a metrics record (not ``step``) as ``train/<key>``, as open_clip_train names them."""
    return {f"train/{k}": v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardSink:
    """Scalars to ``OUTPUT/tensorboard`` (open_clip_train's ``<logs>/<name>/tensorboard``)."""

    def __init__(self, run: RunInfo) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError("--report-to tensorboard needs the tensorboard package "
                               f"({REQUIREMENTS['tensorboard'][1]})") from exc
        self.writer = SummaryWriter(str(Path(run.output) / "tensorboard"))

    def log(self, record: Mapping[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars to a wandb run (files under ``OUTPUT/wandb``), stepped by our optimiser step."""

    def __init__(self, run: RunInfo) -> None:
        import wandb

        run_id = re.sub(r"[/\\#?%:]", "-", run.name)
        try:
            self.run = wandb.init(project=run.wandb_project, name=run.name, id=run_id, notes=run.wandb_notes,
                                  config=run.config, dir=run.output, resume="allow" if run.resumed else None)
        except Exception as exc:  # wandb's own errors (no login, no network): one line, not a traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RuntimeError(f"--report-to wandb: wandb.init failed ({first}); without network set "
                               "WANDB_MODE=offline") from exc

    def log(self, record: Mapping[str, Any]) -> None:
        data = scalars(record)
        if data:
            self.run.log({**data, "step": record["step"]}, step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


SINKS: Dict[str, Callable[[RunInfo], Any]] = {"tensorboard": TensorBoardSink, "wandb": WandbSink}


def open_sinks(names: Tuple[str, ...], run: RunInfo) -> List[Any]:
    """One sink per backend name (each has ``log(record)`` and ``close()``); closes those opened on a failure."""
    sinks: List[Any] = []
    try:
        for name in names:
            sinks.append(SINKS[name](run))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
