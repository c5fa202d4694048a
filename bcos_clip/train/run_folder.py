"""The run folder of ``train``: what may start, continue or replace a run there (checked before any work).

A folder *holds a run* when it has any of ``checkpoints/``, ``metrics.jsonl``, ``train_config.json``,
``summary.json``, ``out.log`` or ``tensorboard/`` (``wandb/`` is wandb's own store: never removed, not a
run). The rules:

- no ``--resume``: a folder that holds a run is refused (nothing is deleted or overwritten), unless
  ``--overwrite`` asks to replace it; the old run's files (and only those) are then removed once the
  new run's models and data are ready, right before it writes anything.
- ``--resume latest``: continues from ``checkpoints/latest``. A new or empty folder (or one holding only
  the records of this same configuration stopped before its first checkpoint) starts fresh, as open_clip's
  ``--resume latest`` does; a broken ``latest`` link, or step checkpoints without ``latest``, is an error,
  never a fresh start over them.
- ``--resume DIR``: a checkpoint of this run (inside ``OUTPUT/checkpoints``) continues it; a checkpoint of
  another run starts a new run here, so the folder must not hold one.

Example::

    check_run_folder(cfg)            # every rank, before models or data are loaded
    ...
    if cfg.overwrite and is_main:
        clear_run(cfg.output)
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import List

from bcos_clip.runtime.contained import is_inside
from bcos_clip.runtime.output_paths import check_output_dir
from bcos_clip.runtime.runfiles import METRICS, SUMMARY, TRAIN_CONFIG
from bcos_clip.train.checkpoint import CHECKPOINTS, LATEST, checkpoints_dir
from bcos_clip.train.config import TrainConfig
from bcos_clip.train.run_log import OUT_LOG

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
RUN_FILES = (CHECKPOINTS, METRICS, TRAIN_CONFIG, SUMMARY, TENSORBOARD_DIR, OUT_LOG)
# fields that may differ between launches of the same run (how it starts and reports, not what it trains)
_LAUNCH_FIELDS = ("resume", "overwrite", "log_every", "log_every_n_steps", "report_to", "wandb_project_name",
                  "wandb_notes")


class RunFolderError(ValueError):
    """The run folder holds files a run would overwrite, or a broken checkpoint link."""


def run_files(output: str) -> List[str]:
    """Names of the run files present in ``output`` (an empty ``checkpoints/`` does not count)."""
    root = Path(output)
    found = []
    for name in RUN_FILES:
        p = root / name
        if p.is_dir() and name == CHECKPOINTS:
            if any(p.iterdir()):
                found.append(name + "/")
        elif p.is_symlink() or p.exists():
            found.append(name + ("/" if p.is_dir() else ""))
    return found


def _same_run_stopped_early(cfg: TrainConfig) -> bool:
    """True when OUTPUT holds only the records of this configuration stopped before its first checkpoint."""
    root = Path(cfg.output)
    if (root / SUMMARY).exists():  # a finished run
        return False
    try:
        old = json.loads((root / TRAIN_CONFIG).read_text())
    except (OSError, ValueError):
        return False
    now = cfg.to_dict()
    return isinstance(old, dict) and all(old.get(k) == now[k] for k in now if k not in _LAUNCH_FIELDS)


def _check_latest(cfg: TrainConfig, present: List[str]) -> None:
    root = checkpoints_dir(cfg.output)
    latest = root / LATEST
    if latest.is_symlink() and not latest.exists():
        raise RunFolderError(f"--resume latest: {latest} is a broken link (to {latest.readlink()}); refusing to "
                             f"start from scratch over the run in {cfg.output}: repair the link or pass "
                             "--resume DIR with one of its step checkpoints")
    if latest.exists():
        return
    steps = sorted(p.name for p in root.glob("step_*")) if root.is_dir() else []
    if steps:
        raise RunFolderError(f"--resume latest: {root} holds {', '.join(steps[-3:])} but no '{LATEST}' link; "
                             f"pass --resume {root / steps[-1]} to continue, or --overwrite to start over")
    if present and not _same_run_stopped_early(cfg):
        raise RunFolderError(f"--resume latest: --output {cfg.output} holds a run without checkpoints "
                             f"({', '.join(present)}) made with other settings; pass --overwrite to replace it "
                             "or choose a new --output")


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse (RunFolderError / OutputPathError, one line) what would overwrite a run; see the module doc."""
    check_output_dir(cfg.output, "--output")
    check_output_dir(cfg.text_cache, "--text-cache")
    present = run_files(cfg.output)
    if cfg.resume == LATEST:
        _check_latest(cfg, present)
    elif cfg.resume:
        if present and not is_inside(checkpoints_dir(cfg.output), Path(cfg.resume).resolve()):
            raise RunFolderError(f"--output {cfg.output} holds another run ({', '.join(present)}); resuming "
                                 f"{cfg.resume} there would overwrite it: choose a new --output")
    elif present and not cfg.overwrite:
        raise RunFolderError(f"--output {cfg.output} already holds a run ({', '.join(present)}); pass "
                             "--resume latest to continue it, --overwrite to replace it, or a new --output")


def clear_run(output: str) -> List[str]:
    """Remove the run files of ``output`` (nothing else in it); returns what was removed."""
    removed = run_files(output)
    for name in RUN_FILES:
        p = Path(output) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.is_symlink() or p.exists():
            p.unlink()
    if removed:
        log.warning("--overwrite: removed the earlier run's %s from %s", ", ".join(removed), output)
    return removed
