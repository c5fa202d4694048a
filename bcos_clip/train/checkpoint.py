"""Training checkpoints: atomic step directories plus a ``latest`` link, readable by ``bcos_clip.load``.

Layout::

    OUTPUT/checkpoints/step_00001000/   config.json + model.safetensors (bcos_clip.save format),
                                        train_state.json + train_state.safetensors (optimizer,
                                        schedule, scaler, step, epoch, RNG states, counters, plan:
                                        JSON and tensors, never a pickle), train_config.json
    OUTPUT/checkpoints/latest -> step_00001000   (relative symlink)

The data position is a function of the step (epoch, batch in epoch = divmod(step, steps per epoch)).
A `train_state.pt` (the pickle earlier versions wrote) is refused with one line, never unpickled: run
folders get shared and downloaded, and unpickling runs code.

A step directory is written under a temporary name and renamed into place; ``latest`` is a new link
renamed over the old one. A crash at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from bcos_clip.runtime.runfiles import TRAIN_CONFIG
from bcos_clip.train.state_codec import StateFileError, read_state, state_files, write_state

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_STEM = "train_state"
LEGACY_STATE_NAME = "train_state.pt"  # a pickle: refused


def checkpoints_dir(output: str) -> Path:
    return Path(output) / CHECKPOINTS


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def rng_states() -> Dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states."""
    states: Dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _point_latest(root: Path, name: str) -> None:
    tmp_link = root / f".{LATEST}.tmp-{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(name, tmp_link)
    os.replace(tmp_link, root / LATEST)


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    latest = (root / LATEST).resolve() if (root / LATEST).exists() else None
    for old in steps[:-keep]:
        if latest is None or old.resolve() != latest:
            shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(output: str, step: int, write_model, state: Dict[str, Any],
                    config_json: str, keep: int = 0) -> Path:
    """Write ``step_XXXXXXXX`` atomically and point ``latest`` at it.

    Args:
        output: the run directory.
        step: optimiser steps taken.
        write_model: ``f(directory)`` writing the model in the bcos_clip.save format.
        state: the trainer state (goes to ``train_state.json`` + ``train_state.safetensors``).
        config_json: the run's TrainConfig as JSON text.
        keep: keep only the newest ``keep`` step directories (0 = all).
    """
    root = checkpoints_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    for stale in root.glob(".tmp-*"):  # left by a killed run (only rank 0 ever writes here)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    write_model(tmp)
    write_state(*state_files(tmp, STATE_STEM), state)
    (tmp / TRAIN_CONFIG).write_text(config_json)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point_latest(root, name)
    _prune(root, keep)
    log.info("checkpoint %s", final)
    return final


def _refuse_pickled_state(directory: Path) -> None:
    legacy = directory / LEGACY_STATE_NAME
    if legacy.is_file():
        raise StateFileError(f"{legacy}: a pickled trainer state (written by an earlier bcos_clip) is not loaded, "
                             f"since unpickling a file can run code; to go on from its weights, start a new run "
                             f"with --model {directory}")


def find_resume(output: str, resume: Optional[str]) -> Optional[Path]:
    """The checkpoint directory ``--resume`` names (``latest`` may find none: a fresh start)."""
    if not resume:
        return None
    if resume == LATEST:
        path = checkpoints_dir(output) / LATEST
        if not path.exists():
            log.info("--resume latest: no checkpoint in %s yet, starting from scratch", path.parent)
            return None
        return path.resolve()
    path = Path(resume)
    json_path, tensors_path = state_files(path, STATE_STEM)
    if not (json_path.is_file() and tensors_path.is_file()):
        _refuse_pickled_state(path)
        raise FileNotFoundError(f"--resume {resume}: {json_path.name} / {tensors_path.name} not found in {path} "
                                "(not a training checkpoint)")
    return path.resolve()


def load_state(directory: Path) -> Dict[str, Any]:
    """The trainer state of a checkpoint (tensors on the CPU; the optimizer moves its state to its params).

    Reads JSON and safetensors only; a pickled ``train_state.pt`` is refused (StateFileError, one line)."""
    json_path, tensors_path = state_files(Path(directory), STATE_STEM)
    if not json_path.is_file():
        _refuse_pickled_state(Path(directory))
        raise FileNotFoundError(f"{json_path} not found (not a training checkpoint)")
    return read_state(json_path, tensors_path)


def list_checkpoints(output: str) -> List[Path]:
    return sorted(p for p in checkpoints_dir(output).glob("step_*") if p.is_dir())
