"""open_clip_train's names for the settings ``bcos-clip train`` shares with it, mapped onto ours.

Read from open_clip_train's ``params.py`` / ``main.py`` (mlfoundations/open_clip); only names whose meaning
is the same here are taken:

- ``--logs L --name N``: the run folder ``L/N`` (our ``--output``). ``--logs`` defaults to ``./logs/``; without
  ``--name`` the name is made as open_clip_train makes it, from the start time and settings
  (``2026_12_01-15_04_05-model_RN50-lr_0.0001-b_64-j_4-p_auto``; a ``.json`` model config by its file name). ``--logs none`` (open_clip_train: keep no
  logs and no checkpoints) is refused: a distillation run keeps its checkpoints.
- ``--opt``: ``--optimizer`` (``adam``, ``adamw``; their ``nadamw`` and ``timm/*`` are not offered).
- ``--log-metric-every-n-steps``: ``--log-every`` (metrics.jsonl / TensorBoard / wandb, default 10 in both).
- ``--precision``: ``amp_bfloat16`` is ``amp_bf16``; ``pure_bf16`` is ours ``bf16`` (every student weight in
  bfloat16; open_clip_train's ``bf16`` keeps norm layers in fp32, ours does not). ``fp16`` / ``pure_fp16``
  (float16 weights without loss scaling) are refused with the reason (:data:`REFUSED_PRECISIONS`).
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

KEY_ALIASES = {"out": "output", "opt": "optimizer", "log_metric_every_n_steps": "log_every"}
RUN_FOLDER_KEYS = ("logs", "name")
DEFAULT_LOGS = "./logs/"
PRECISION_ALIASES = {"pure_bf16": "bf16", "amp_bfloat16": "amp_bf16"}
_FP16_WHY = ("float16 weights without loss scaling (open_clip_train's {name}) are not supported: Adam on float16 "
             "weights breaks (its eps 1e-8 rounds to 0 and squared gradients below ~2.4e-4 underflow, so one step "
             "with gradient 1e-3 makes a weight -inf; an update of 1e-4 to a weight of 0.5 is below float16's "
             "spacing 4.9e-4); use --precision amp (float16 autocast + GradScaler) or bf16 / pure_bf16")
REFUSED_PRECISIONS = {name: _FP16_WHY.format(name=name) for name in ("fp16", "pure_fp16")}
# what --precision accepts on the command line: ours, then open_clip_train's other spellings
OPEN_CLIP_PRECISIONS = tuple(PRECISION_ALIASES) + tuple(REFUSED_PRECISIONS)


def canonical_precision(name: str) -> str:
    """Our name of ``--precision name`` (open_clip_train's spellings mapped); refused ones raise ValueError."""
    if name in REFUSED_PRECISIONS:
        raise ValueError(f"--precision {name}: {REFUSED_PRECISIONS[name]}")
    return PRECISION_ALIASES.get(name, name)


def check_run_folder_key(key: str, value: Any) -> str:
    """``logs`` / ``name``: a non-empty string (``logs: none`` is refused)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} (--{key}): expected a folder name, got {value!r}")
    if key == "logs" and value.strip().lower() == "none":
        raise ValueError("--logs none (open_clip_train: keep no logs and no checkpoints) is not supported: a "
                         "distillation run keeps its checkpoints; give --logs DIR (or --output DIR)")
    return value


def default_run_name(values: Mapping[str, Any], now: datetime) -> str:
    """open_clip_train's experiment name: start time, model, lr, batch size, workers, precision (a JSON model
    config is named by its file name without ``.json``; open_clip_train would spell its whole path)."""
    model = str(values.get("model"))
    model = Path(model).stem if model.endswith(".json") else model.replace("/", "-")
    return "-".join([now.strftime("%Y_%m_%d-%H_%M_%S"), f"model_{model}", f"lr_{values['lr']}",
                     f"b_{values['batch_size']}", f"j_{values['workers']}", f"p_{values['precision']}"])


def resolve_run_folder(values: Dict[str, Any], defaults: Mapping[str, Any],
                       now: Optional[datetime]) -> Dict[str, Any]:
    """``values`` with ``logs`` / ``name`` replaced by ``output = logs/name``.

    Args:
        values: option values (field names), maybe with ``logs`` and ``name``.
        defaults: the fields' defaults (for a made-up name).
        now: the start time a missing ``name`` is made of; None: ``name`` is required with ``logs``.
    """
    values = dict(values)
    logs, name = values.pop("logs", None), values.pop("name", None)
    if logs is None and name is None:
        return values
    for key, value in (("logs", logs), ("name", name)):
        if value is not None:
            check_run_folder_key(key, value)
    if values.get("output") not in (None, ""):
        raise ValueError("give --output DIR or open_clip_train's --logs DIR --name NAME (the folder DIR/NAME), "
                         "not both")
    if name is None:
        if now is None:
            raise ValueError("--logs without --name: give --name (a made-up name holds the start time, which "
                             "torchrun's ranks do not share)")
        name = default_run_name({**defaults, **values}, now)
    values["output"] = str(Path(logs if logs is not None else DEFAULT_LOGS) / name)
    return values
