"""The training configuration: one frozen dataclass, built from a YAML file overlaid by flags.

Config flows one way: argv (cli) -> ``TrainConfig`` (saved as ``train_config.json`` beside every
checkpoint) -> factories. YAML keys are the field names (``-`` and ``_`` both accepted).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from bcos_clip.train.losses import LOSSES, LossParams

PRECISIONS = ("auto", "fp32", "amp", "amp_bf16", "bf16")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("cosine", "const")
TEXT_SOURCES = ("auto", "captions", "classnames")
REPORTERS = ("", "tensorboard")
CONFIG_JSON = "train_config.json"


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
    save_every: int = 1000
    keep_checkpoints: int = 0
    resume: Optional[str] = None
    log_every: int = 10
    report_to: str = ""
    zeroshot_data: Optional[str] = None
    zeroshot_every: int = 0
    zeroshot_samples: int = 1000

    def __post_init__(self) -> None:
        _choice("loss", self.loss, tuple(LOSSES))
        _choice("precision", self.precision, PRECISIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr-scheduler", self.lr_scheduler, SCHEDULES)
        _choice("text-source", self.text_source, TEXT_SOURCES)
        _choice("report-to", self.report_to, REPORTERS)
        for name in ("batch_size", "accum_freq", "save_every", "log_every", "shuffle_buffer",
                     "folder_chunk_size", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "warmup", "zeroshot_every", "keep_checkpoints", "wd", "caption_weight", "agc_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of --epochs N and --steps N")
        if (self.epochs or self.steps or 0) < 1:
            raise ValueError("--epochs / --steps must be >= 1")
        if not self.lr > 0 or not self.temperature > 0:
            raise ValueError(f"--lr and --temperature must be > 0 (got {self.lr}, {self.temperature})")
        if not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"--crop-scale-min must be in (0, 1], got {self.crop_scale_min}")

    def loss_params(self) -> LossParams:
        return LossParams(temperature=self.temperature, caption_weight=self.caption_weight,
                          siglip_scale=self.siglip_scale, siglip_bias=self.siglip_bias)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save_json(self, directory: Path) -> Path:
        path = Path(directory) / CONFIG_JSON
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path


def _choice(flag: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"--{flag} {value!r}: choose one of {', '.join(repr(c) for c in choices)}")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def normalise_keys(values: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """``-`` -> ``_`` in keys; unknown keys raise naming ``where``."""
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name == "out":
            name = "output"
        if name not in FIELDS:
            raise KeyError(f"{where}: unknown training option {key!r}")
        out[name] = value
    return out


def read_yaml(path: str) -> Dict[str, Any]:
    """A YAML run config as a dict of field values."""
    from bcos_clip.train.yaml_io import load_yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config: {path} not found")
    data = load_yaml(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of options at the top level")
    return normalise_keys(data, f"--config {path}")


def build_config(flags: Mapping[str, Any], yaml_path: Optional[str] = None) -> TrainConfig:
    """YAML values overlaid by the explicitly given ``flags`` -> :class:`TrainConfig`.

    ``--epochs`` given on the command line drops a YAML ``steps`` and vice versa.
    """
    values = read_yaml(yaml_path) if yaml_path else {}
    flags = normalise_keys(flags, "command line")
    if "epochs" in flags and flags["epochs"] is not None:
        values.pop("steps", None)
    if "steps" in flags and flags["steps"] is not None:
        values.pop("epochs", None)
    values.update(flags)
    missing = [n for n in ("model", "train_data", "output") if values.get(n) in (None, "")]
    if missing:
        raise ValueError("missing required option(s): " + ", ".join("--" + m.replace("_", "-") for m in missing))
    return TrainConfig(**values)


def load_config_json(path: Path) -> TrainConfig:
    """Read a ``train_config.json`` written by :meth:`TrainConfig.save_json`."""
    data = json.loads(Path(path).read_text())
    return TrainConfig(**normalise_keys(data, str(path)))
