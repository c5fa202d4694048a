"""What a run does after an optimiser step: log, print a progress line, run the zero-shot check, save.

Step counts (ours) and epoch counts (open_clip_train's) sit side by side; an event is due when either is:

- metrics record (``metrics.jsonl`` + backends): every ``log_every`` steps, on a progress-line step, at the end.
- progress line (log and ``out.log``): every ``log_every_n_steps`` steps and at the end.
- zero-shot check: every ``zeroshot_every`` steps; with ``zeroshot_frequency`` N, after every N-th epoch and
  at the end of the run (open_clip_train: ``epoch % N == 0 or epoch == epochs``).
- checkpoint: every ``TrainConfig.checkpoint_every`` steps; with ``save_frequency`` N, after every N-th epoch
  (open_clip_train's ``epoch_N.pt``); the loop also saves at the end of the run.

Epochs count from 1 when complete: step ``s`` ends epoch ``s // steps_per_epoch`` when it divides evenly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Due:
    """The events due after one step."""

    record: bool
    progress: bool
    zeroshot: bool
    save: bool


def _every(n: Optional[int], step: int) -> bool:
    return bool(n) and step % n == 0


def _epochs(n: int, step: int, steps_per_epoch: int) -> bool:
    """After the N-th, 2N-th ... epoch (``n`` = 0: never)."""
    return bool(n) and step % steps_per_epoch == 0 and (step // steps_per_epoch) % n == 0


def due_after(step: int, total_steps: int, steps_per_epoch: int, cfg) -> Due:
    """The events due after optimiser step ``step`` (1-based) of a ``total_steps`` run.

    cfg: a :class:`~bcos_clip.train.config.TrainConfig` (its cadence fields).
    """
    last = step == total_steps
    progress = _every(cfg.log_every_n_steps, step) or last
    zeroshot = _every(cfg.zeroshot_every, step) or (
        bool(cfg.zeroshot_frequency) and (last or _epochs(cfg.zeroshot_frequency, step, steps_per_epoch)))
    save = _every(cfg.checkpoint_every, step) or _epochs(cfg.save_frequency, step, steps_per_epoch)
    return Due(record=_every(cfg.log_every, step) or progress, progress=progress, zeroshot=zeroshot, save=save)
