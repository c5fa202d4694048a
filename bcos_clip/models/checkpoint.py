"""Self-describing checkpoints: `model.safetensors` + `config.json` (model config, source, bcosify spec,
preprocess, tokenizer, package versions). They reload offline: the text tower is saved too."""
from __future__ import annotations

import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bcos_clip.bcosify import BcosifySpec
from bcos_clip.models.bcos_model import BcosCLIP, bcosify
from bcos_clip.models.hf_tokenizer import bundle_tokenizer, resolve_bundled_tokenizer
from bcos_clip.models.loading import SOURCE_ATTR, instantiate
from bcos_clip.models.state_diff import CheckpointMismatchError, key_diff, load_weights_strict  # noqa: F401
from bcos_clip.models.strict_json import dumps_strict
from bcos_clip.runtime.contained import OutsideFolderError

log = logging.getLogger(__name__)
FORMAT = "bcos_clip"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEACHER_VISUAL_NAME = "teacher_visual.safetensors"
# Normalize6 constants, stored by checkpoints written before they followed the input's dtype
LEGACY_KEYS = ("input_norm.mean", "input_norm.std")
PathLike = Union[str, Path]


def package_versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("bcos_clip", "torch", "torchvision", "open_clip_torch", "safetensors", "webdataset"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def is_checkpoint_dir(path: PathLike) -> bool:
    """config.json (with "format": "bcos_clip") + model.safetensors; a transformers folder is not one."""
    p = Path(path)
    if not ((p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()):
        return False
    try:
        return json.loads((p / CONFIG_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save(model: BcosCLIP, directory: PathLike, teacher: Optional[nn.Module] = None,
         extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write `model` to `directory` (created). `teacher`: also save the teacher's image tower."""
    if not isinstance(model, BcosCLIP):
        raise TypeError(f"bcos_clip.save expects a BcosCLIP, got {type(model).__name__}")
    d = Path(directory)
    dumps_strict(dict(extra or {}), f"checkpoint {d}: config.json 'extra'")  # refused before anything is written
    d.mkdir(parents=True, exist_ok=True)
    model_cfg, tokenizer_files = bundle_tokenizer(model.source["model_cfg"], d, model.tokenizer)  # HF tokenizer -> d
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "source": {k: model.source.get(k) for k in ("name", "pretrained", "overrides")},
        "model_cfg": model_cfg, "preprocess_cfg": model.source["preprocess_cfg"],
        "bcosify": model.spec.to_dict(),
        "tokenizer": {"context_length": int(model_cfg["text_cfg"].get("context_length", 77)),
                      **({"files": tokenizer_files} if tokenizer_files else {})},
        "teacher_visual": teacher is not None, "versions": package_versions(), "extra": dict(extra or {}),
    }
    text = dumps_strict(config, f"checkpoint {d}: config.json", indent=2, default=str)  # before the weights
    save_file(_tensors(model), str(d / WEIGHTS_NAME), metadata={"format": FORMAT})
    if teacher is not None:
        save_file(_tensors(teacher.visual), str(d / TEACHER_VISUAL_NAME), metadata={"format": FORMAT})
    (d / CONFIG_NAME).write_text(text)
    return d


def read_config(directory: PathLike) -> Dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"not a bcos_clip checkpoint: {path} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    if config.get("model_type") == "clip":
        raise ValueError(f"{directory} is a transformers CLIP folder, not a bcos_clip checkpoint: load it with "
                         "bcos_clip.load_clip (or --model) and B-cosify it")
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: 'format' is {config.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("model_cfg", "source", "preprocess_cfg", "bcosify") if not isinstance(config.get(k), dict)]
    if missing:
        raise ValueError(f"{path}: missing or malformed {', '.join(missing)}")
    return config


def read_safetensors(path: Path, map_location: Union[str, torch.device] = "cpu") -> Dict[str, torch.Tensor]:
    """A safetensors file's tensors; an unreadable file is a one-line ValueError naming it."""
    try:
        return load_file(str(path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error type for corrupt / truncated files
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc


def read_model_weights(path: Path, map_location: Union[str, torch.device] = "cpu") -> Dict[str, torch.Tensor]:
    """The BcosCLIP tensors of a `model.safetensors` (keys older versions stored and no longer use dropped)."""
    return {k: v for k, v in read_safetensors(path, map_location).items() if k not in LEGACY_KEYS}


def build_from_config(config: Dict[str, Any], where: str = CONFIG_NAME) -> BcosCLIP:
    """The (randomly initialised) BcosCLIP a config describes (``where``: its file, named in errors)."""
    clip = instantiate(config["model_cfg"], f"{where}: model_cfg")
    setattr(clip, SOURCE_ATTR, {**config["source"], "model_cfg": config["model_cfg"],
                                "preprocess_cfg": config["preprocess_cfg"]})
    return bcosify(clip, spec=BcosifySpec.from_dict(config["bcosify"]))


def load(directory: PathLike, map_location: Union[str, torch.device] = "cpu", allow_hub: bool = False) -> BcosCLIP:
    """Read a checkpoint written by `save` (strict: a mismatch raises with the key diff).

    Everything is read from inside `directory`; a config.json naming a hub tokenizer or a hub text model
    (a network call) is refused unless `allow_hub=True`.
    """
    d = Path(directory)
    config = read_config(d)
    if not (d / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"not a bcos_clip checkpoint: {d / WEIGHTS_NAME} is missing")
    hub_model = config["model_cfg"].get("text_cfg", {}).get("hf_model_name")
    if hub_model and not allow_hub:
        raise OutsideFolderError(f"checkpoint {d}: config.json names the text model {hub_model!r} on the hub; it is "
                                 "fetched only when you ask: bcos_clip.load(..., allow_hub=True)")
    config["model_cfg"] = resolve_bundled_tokenizer(config["model_cfg"], d, config.get("tokenizer", {}), allow_hub)
    model = build_from_config(config, str(d / CONFIG_NAME))
    load_weights_strict(model, read_model_weights(d / WEIGHTS_NAME, map_location), str(d / WEIGHTS_NAME))
    model.checkpoint_config = config
    model.checkpoint_dir = str(d)  # how messages name the model
    return model.eval().to(map_location)


def load_teacher_visual(directory: PathLike, clip_model: nn.Module) -> nn.Module:
    """Load the teacher image tower saved beside a checkpoint into `clip_model.visual`."""
    path = Path(directory) / TEACHER_VISUAL_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checkpoint was saved without the teacher's tower")
    load_weights_strict(clip_model.visual, read_safetensors(path), str(path))
    return clip_model
