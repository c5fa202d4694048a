"""The training configuration: one frozen dataclass, built from a YAML file overlaid by flags.

Config flows one way: argv (cli) -> ``TrainConfig`` (saved as ``train_config.json`` beside every
checkpoint) -> factories. YAML keys are the field names (``-`` and ``_`` both accepted), plus
open_clip_train's names of the same settings (``bcos_clip.train.open_clip_names``): ``logs`` + ``name``
(the run folder ``logs/name``), ``opt``, ``log_metric_every_n_steps`` and its ``--precision`` spellings.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from bcos_clip.bcosify.spec import LAYERNORMS, POSITIONALS, QK_KINDS
from bcos_clip.models.strict_json import dumps_strict
from bcos_clip.runtime.precision import PRECISIONS
from bcos_clip.runtime.runfiles import TRAIN_CONFIG
from bcos_clip.train.losses import LOSSES, LossParams
from bcos_clip.train.open_clip_names import (KEY_ALIASES, RUN_FOLDER_KEYS, canonical_precision,
                                             check_run_folder_key, resolve_run_folder)
from bcos_clip.train.reporters import parse_report_to

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("cosine", "const")
TEXT_SOURCES = ("auto", "captions", "classnames")
DEFAULT_SAVE_EVERY = 1000


@dataclass(frozen=True)
class TrainConfig:
    """Everything a distillation run needs; see ``bcos-clip train --help`` for each field."""

    # model
    model: str
    train_data: str
    output: str
    pretrained: Optional[str] = None
    bcos_b: float = 2.0
    bcos_bias: bool = False
    bcos_qk: str = "bcos"
    bcos_layernorm: str = "centered"
    bcos_positional: str = "bias"
    bcos_positional_scale: float = 1.0
    # data
    train_num_samples: Optional[int] = None
    dataset_resampled: bool = False
    shuffle_buffer: int = 1000
    folder_chunk_size: int = 1000
    crop_scale_min: float = 0.08
    workers: int = 4
    # loss
    loss: str = "text_kd"
    temperature: float = 0.01
    caption_weight: float = 0.0
    siglip_scale: float = 10.0
    siglip_bias: float = -10.0
    text_source: str = "auto"
    classnames: Optional[str] = None
    templates: str = "openai"
    text_cache: Optional[str] = None
    # optimisation
    batch_size: int = 64
    epochs: Optional[int] = None
    steps: Optional[int] = None
    accum_freq: int = 1
    optimizer: str = "adam"
    lr: float = 1e-4
    wd: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    lr_scheduler: str = "cosine"
    warmup: int = 0
    agc_clip: float = 0.01
    agc_eps: float = 1e-3
    grad_clip_norm: Optional[float] = None
    precision: str = "auto"  # CUDA: bf16 autocast where supported, else fp16 + GradScaler; CPU: fp32
    torchcompile: bool = False
    max_bad_steps: int = 20
    # run
    seed: int = 0
    device: str = "auto"
    save_every: Optional[int] = None  # steps; None: DEFAULT_SAVE_EVERY, or only by epoch with save_frequency
    save_frequency: int = 0  # epochs (open_clip_train's --save-frequency); 0: off
    keep_checkpoints: int = 0
    resume: Optional[str] = None
    overwrite: bool = False
    log_every: int = 10  # metrics.jsonl / TensorBoard / wandb (open_clip_train's --log-metric-every-n-steps)
    log_every_n_steps: int = 100  # a progress line in the log and OUTPUT/out.log
    report_to: str = ""  # comma-separated: tensorboard, wandb (or all)
    wandb_project_name: str = "bcos-clip"
    wandb_notes: str = ""
    zeroshot_data: Optional[str] = None
    zeroshot_every: int = 0
    zeroshot_frequency: int = 0  # epochs (open_clip_train's --zeroshot-frequency); 0: off
    zeroshot_samples: int = 1000

    def __post_init__(self) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, check_option(name, getattr(self, name)))
        object.__setattr__(self, "precision", canonical_precision(self.precision))
        object.__setattr__(self, "report_to", ",".join(parse_report_to(self.report_to)))
        _choice("loss", self.loss, tuple(LOSSES))
        _choice("precision", self.precision, PRECISIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr-scheduler", self.lr_scheduler, SCHEDULES)
        _choice("text-source", self.text_source, TEXT_SOURCES)
        if self.resume and self.overwrite:
            raise ValueError("give --resume (continue a run) or --overwrite (replace it), not both")
        _choice("bcos-qk", self.bcos_qk, QK_KINDS)
        _choice("bcos-layernorm", self.bcos_layernorm, LAYERNORMS)
        _choice("bcos-positional", self.bcos_positional, POSITIONALS)
        if not 0 < self.bcos_positional_scale < math.inf:
            raise ValueError(f"--bcos-positional-scale must be a finite number > 0, got {self.bcos_positional_scale}")
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of --epochs N and --steps N")

    @property
    def checkpoint_every(self) -> Optional[int]:
        """Steps between checkpoints: ``save_every``; unset, 1000, or none when ``save_frequency`` (epochs)
        is given. A checkpoint is also written at the end of the run."""
        if self.save_every is not None:
            return self.save_every
        return None if self.save_frequency else DEFAULT_SAVE_EVERY

    @property
    def reporters(self) -> tuple:
        """The ``report_to`` backends: a tuple of ``tensorboard`` / ``wandb``."""
        return tuple(n for n in self.report_to.split(",") if n)

    def loss_params(self) -> LossParams:
        return LossParams(temperature=self.temperature, caption_weight=self.caption_weight,
                          siglip_scale=self.siglip_scale, siglip_bias=self.siglip_bias)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save_json(self, directory: Path) -> Path:
        path = Path(directory) / TRAIN_CONFIG
        path.write_text(dumps_strict(self.to_dict(), f"train config {path}", indent=2, sort_keys=True))
        return path


def _choice(flag: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"--{flag} {value!r}: choose one of {', '.join(repr(c) for c in choices)}")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
REQUIRED = ("model", "train_data", "output")


@dataclass(frozen=True)
class Bound:
    """The allowed range of a numeric option: ``low`` / ``high`` (None: unbounded), open ends if asked."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> Optional[str]:
        """Why ``value`` is outside (``"must be > 0"``), or None."""
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (low_bad or high_bad):
            return None
        if self.high is None:
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        return (f"must be in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


_POSITIVE, _NON_NEGATIVE, _AT_LEAST_1 = Bound(0.0, low_open=True), Bound(0.0), Bound(1.0)
BOUNDS: Dict[str, Bound] = {
    **dict.fromkeys(("batch_size", "accum_freq", "save_every", "log_every", "shuffle_buffer", "folder_chunk_size",
                     "max_bad_steps", "epochs", "steps", "train_num_samples", "zeroshot_samples", "bcos_b",
                     "log_every_n_steps"), _AT_LEAST_1),
    **dict.fromkeys(("workers", "warmup", "zeroshot_every", "keep_checkpoints", "wd", "caption_weight",
                     "agc_clip", "save_frequency", "zeroshot_frequency"), _NON_NEGATIVE),
    **dict.fromkeys(("lr", "temperature", "eps", "agc_eps", "grad_clip_norm", "siglip_scale"), _POSITIVE),
    "beta1": Bound(0.0, 1.0, high_open=True), "beta2": Bound(0.0, 1.0, high_open=True),
    "crop_scale_min": Bound(0.0, 1.0, low_open=True),
}
_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


def option_kind(name: str) -> type:
    """int, float, bool or str: the type of option ``name`` (Optional stripped)."""
    text = str(FIELDS[name].type)
    return _KINDS[text[len("Optional["):-1] if text.startswith("Optional[") else text]


def check_option(name: str, value: Any) -> Any:
    """``value`` checked against the type and range of option ``name`` (an int for a float option becomes a
    float). Raises ValueError naming the key and its flag: ``lr (--lr): expected a number, got 'abc'``."""
    if name in RUN_FOLDER_KEYS:
        return check_run_folder_key(name, value)
    if value is None and (FIELDS[name].default is None or name in REQUIRED):
        return value
    kind = option_kind(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    wanted = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
    why = None
    if type(value) is not kind:
        why = f"expected {wanted}"
    elif kind is float and not math.isfinite(value):
        why = "expected a finite number"
    elif name in BOUNDS:
        why = BOUNDS[name].problem(value)
    if why:
        raise ValueError(f"{name} (--{name.replace('_', '-')}): {why}, got {value!r}")
    return value


def normalize_keys(values: Mapping[str, Any], where: str, extra: tuple = ()) -> Dict[str, Any]:
    """``-`` -> ``_`` in keys, aliases (``out``, open_clip_train's ``opt`` ...) to field names; ``extra``: other
    keys let through (the run-folder keys ``logs`` / ``name``); unknown keys raise naming ``where``."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        name = KEY_ALIASES.get(name, name)
        if name in out:
            raise ValueError(f"{where}: {key!r} sets {name} a second time (one of the two is an alias)")
        if name not in FIELDS and name not in extra:
            raise KeyError(f"{where}: unknown training option {key!r} (bcos-clip train --help lists them)")
        out[name] = value
    return out


def read_yaml(path: str) -> Dict[str, Any]:
    """A YAML run config as a dict of field values."""
    from bcos_clip.runtime.yaml_io import load_yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config {path}: {'a directory, not a file' if p.is_dir() else 'not found'}")
    data = load_yaml(p.read_text(encoding="utf-8"), str(p)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of options at the top level")
    return _checked(normalize_keys(data, f"--config {path}", RUN_FOLDER_KEYS), f"--config {path}")


def _checked(values: Dict[str, Any], where: str) -> Dict[str, Any]:
    try:
        return {k: check_option(k, v) for k, v in values.items()}
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def build_config(flags: Mapping[str, Any], yaml_path: Optional[str] = None,
                 now: Optional[datetime] = None) -> TrainConfig:
    """YAML values overlaid by the explicitly given ``flags`` -> :class:`TrainConfig`.

    ``--epochs`` given on the command line drops a YAML ``steps`` and vice versa; ``--output`` drops a
    YAML ``logs`` / ``name`` and they drop a YAML ``output``. ``logs`` / ``name`` become ``output``
    (:func:`~bcos_clip.train.open_clip_names.resolve_run_folder`; ``now``: the time a missing name is
    made of, None: no name is made up, a missing ``--name`` is an error).
    """
    values = read_yaml(yaml_path) if yaml_path else {}
    flags = normalize_keys(flags, "command line", RUN_FOLDER_KEYS)
    if "epochs" in flags and flags["epochs"] is not None:
        values.pop("steps", None)
    if "steps" in flags and flags["steps"] is not None:
        values.pop("epochs", None)
    if "output" in flags:
        values = {k: v for k, v in values.items() if k not in RUN_FOLDER_KEYS}
    if any(k in flags for k in RUN_FOLDER_KEYS):
        values.pop("output", None)
    values.update(flags)
    defaults = {n: f.default for n, f in FIELDS.items() if f.default is not dataclasses.MISSING}
    values = resolve_run_folder(values, defaults, now)
    missing = [n for n in REQUIRED if values.get(n) in (None, "")]
    if missing:
        names = ["--output (or --logs DIR --name NAME)" if m == "output" else "--" + m.replace("_", "-")
                 for m in missing]
        raise ValueError("missing required option(s): " + ", ".join(names))
    return TrainConfig(**values)


def load_config_json(path: Path) -> TrainConfig:
    """Read a ``train_config.json`` written by :meth:`TrainConfig.save_json`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of training options")
    values = _checked(normalize_keys(data, str(path)), str(path))
    missing = [n for n in REQUIRED if n not in values]
    if missing:
        raise ValueError(f"{path}: missing option(s) {', '.join(missing)}")
    return TrainConfig(**values)
