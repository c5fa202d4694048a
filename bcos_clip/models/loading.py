"""Loading teachers: open_clip names + tags, JSON configs, local checkpoints (the real loading code).

`load_clip(name, pretrained=None, **overrides)` builds the open_clip model from its config with the
overrides deep-merged, loads weights from a pretrained tag (downloaded by open_clip; fails offline with a
clear error) or a local file, and records its provenance on the model (`model.bcos_clip_source`).
"""
from __future__ import annotations

import copy
import difflib
import inspect
import json
import logging
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import open_clip
import torch
from open_clip.factory import load_state_dict
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import PreprocessCfg, merge_preprocess_dict
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.models import hf_clip
from bcos_clip.models.preprocess import make_preprocess
from bcos_clip.models.state_diff import CheckpointMismatchError, key_diff, load_weights_strict
from bcos_clip.models.torch_files import UnsafeFileError, pickled_globals

log = logging.getLogger(__name__)
SOURCE_ATTR = "bcos_clip_source"


def deep_merge(base: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Recursively merge `overrides` into a copy of `base` (dicts merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_json_config(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"load_clip: cannot read model config {path}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"load_clip: {path} is not an open_clip model config (a JSON object): "
                         f"it holds a {type(cfg).__name__}")
    if "model_cfg" in cfg:  # open_clip hub format (open_clip_config.json)
        return cfg["model_cfg"], cfg.get("preprocess_cfg", {})
    if "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise ValueError(f"load_clip: {path} is not an open_clip model config (needs vision_cfg and text_cfg)")
    return cfg, cfg.pop("preprocess_cfg", {}) if isinstance(cfg.get("preprocess_cfg"), dict) else {}


def resolve_config(name: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Model config and preprocess overlay for a built-in name, a JSON config path or a transformers
    CLIP folder (config.json of model_type "clip", mapped by models.hf_clip)."""
    path = Path(name)
    if path.is_dir():
        if hf_clip.is_hf_clip_dir(path):
            return hf_clip.open_clip_config(path)
        raise ValueError(f"load_clip: {name} is a directory but not a transformers CLIP folder "
                         "(config.json with model_type 'clip'); for bcos_clip checkpoints use bcos_clip.load")
    if name.endswith(".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"load_clip: model config file not found: {name}")
        return _read_json_config(path)
    cfg = open_clip.get_model_config(name.replace("/", "-"))
    if cfg is None:
        known = open_clip.list_models()
        close = [m for m in known if name.lower().split("-")[0] in m.lower()][:8]
        raise ValueError(f"load_clip: unknown model name {name!r} (not an open_clip model, not a JSON file); "
                         f"similar: {close or known[:8]}")
    return cfg, {}


def check_model_config(model_cfg: Any, where: str) -> None:
    """Refuse a config open_clip would choke on with a TypeError: not an object, or unknown keys at the top
    level or in ``vision_cfg`` / ``text_cfg`` (named, with ``where``: the file or model name)."""
    if not isinstance(model_cfg, dict):
        raise ValueError(f"{where}: a model config must be an object, got {type(model_cfg).__name__}")
    if "multimodal_cfg" in model_cfg:
        raise ValueError(f"{where}: CoCa models are not supported")
    known = set(inspect.signature(open_clip.CLIP.__init__).parameters) - {"self"} | {"custom_text"}
    parts = [("", model_cfg, known)]
    for sub, cls in (("vision_cfg", CLIPVisionCfg), ("text_cfg", CLIPTextCfg)):
        value = model_cfg.get(sub, {})
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {sub} must be an object, got {value!r}")
        parts.append((sub + " ", value, {f.name for f in fields(cls)} | ({"conv_stem"} if sub == "vision_cfg" else set())))
    for label, part, names in parts:
        unknown = sorted(set(part) - names)
        if unknown:
            close = [m for k in unknown for m in difflib.get_close_matches(str(k), names, n=1)]
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"{len(names)} keys are known"
            raise ValueError(f"{where}: unknown {label}key(s) {', '.join(map(repr, unknown))} in the model config "
                             f"({hint})")


def instantiate(model_cfg: Dict[str, Any], where: str = "model config") -> nn.Module:
    """Build an open_clip CLIP / CustomTextCLIP from a config dict (random weights). ``where`` names the
    config (its file) in errors: unknown keys, and values open_clip cannot build a model from.

    ``vision_cfg.conv_stem`` (our key, a list of channels): the ViT's patch conv becomes a
    ``bcos_clip.nn.ConvStem`` of that many stride-2 stages (their product must be the patch size).
    """
    check_model_config(model_cfg, where)
    cfg = copy.deepcopy(model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    stem = (cfg.get("vision_cfg") or {}).pop("conv_stem", None)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        model = cls(**cfg)
    except (TypeError, ValueError, KeyError) as exc:  # a value of the wrong type or shape in the config
        raise ValueError(f"{where}: open_clip cannot build a model from this config "
                         f"({type(exc).__name__}: {_first_line(exc)})") from exc
    if stem is not None:
        _add_conv_stem(model, stem, cfg["vision_cfg"])
    return model


def _add_conv_stem(model: nn.Module, channels: Any, vision_cfg: Dict[str, Any]) -> None:
    conv1 = getattr(model.visual, "conv1", None)
    if not isinstance(conv1, nn.Conv2d) or not hasattr(model.visual, "positional_embedding") \
            or isinstance(vision_cfg.get("layers"), (list, tuple)):
        raise ValueError("load_clip: vision_cfg.conv_stem is for VisionTransformer towers only")
    if not isinstance(channels, (list, tuple)) or not all(isinstance(c, int) for c in channels):
        raise ValueError(f"load_clip: vision_cfg.conv_stem must be a list of channel counts, got {channels!r}")
    stem = bnn.ConvStem(channels, conv1.out_channels, conv1.in_channels)
    if stem.stride != tuple(conv1.stride):
        raise ValueError(f"load_clip: vision_cfg.conv_stem has {len(channels)} stride-2 stages (stride "
                         f"{stem.stride[0]}) but patch_size is {conv1.stride[0]}; they must match")
    model.visual.conv1 = stem


def make_tokenizer(model_cfg: Dict[str, Any]) -> Callable:
    """The tokenizer for a config, with the model's effective context length."""
    text_cfg = model_cfg.get("text_cfg", {})
    ctx = int(text_cfg.get("context_length", 77))
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    if "hf_tokenizer_name" in text_cfg:
        return open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=ctx, **kwargs)
    return open_clip.tokenizer.SimpleTokenizer(context_length=ctx, **kwargs)


def _pretrained_checkpoint(name: str, pretrained: str, model_cfg: Dict[str, Any],
                           pp: Dict[str, Any], cache_dir: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
    if os.path.isfile(pretrained):
        return pretrained, pp
    tag_cfg = open_clip.get_pretrained_cfg(name.replace("/", "-"), pretrained)
    if not tag_cfg:
        raise ValueError(f"load_clip: pretrained {pretrained!r} is neither a file nor a known tag of {name!r}; "
                         f"tags: {open_clip.list_pretrained_tags_by_model(name.replace('/', '-'))}")
    if "quick_gelu" in tag_cfg:
        model_cfg["quick_gelu"] = bool(tag_cfg["quick_gelu"])
    try:
        path = open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as exc:  # network failures come in many types
        raise RuntimeError(f"load_clip: could not download pretrained weights {name}/{pretrained} "
                           f"(offline? pass a local checkpoint path instead): {exc}") from exc
    if not path:
        raise RuntimeError(f"load_clip: no download source for {name}/{pretrained}")
    return path, merge_preprocess_dict(pp, tag_cfg)


def _load_open_clip_checkpoint(model: nn.Module, checkpoint: str, name: str) -> None:
    """open_clip.load_checkpoint (strict); a mismatch is one line listing the keys and shapes.

    open_clip reads torch files weights-only (and retries a TypeError without the flag): a file naming
    globals beyond torch's allowlist is refused here first, from a static scan (nothing unpickled)."""
    unsafe = pickled_globals(checkpoint) if not str(checkpoint).endswith((".safetensors", ".npz", ".npy")) else None
    if unsafe:
        raise UnsafeFileError(f"load_clip: checkpoint {checkpoint} names {', '.join(unsafe[:4])}, which could run "
                              "code when unpickled: not loaded")
    try:
        open_clip.load_checkpoint(model, checkpoint, strict=True)
    except RuntimeError as exc:
        try:
            diff = key_diff(model.state_dict(), load_state_dict(checkpoint))
        except Exception:  # unreadable file: report open_clip's own first line
            diff = ""
        raise CheckpointMismatchError(f"load_clip: checkpoint {checkpoint} does not match {name}: "
                                      f"{diff or _first_line(exc)}") from exc
    except Exception as exc:  # unpickling / archive errors of a corrupt or foreign file
        raise ValueError(f"load_clip: cannot read checkpoint {checkpoint}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_clip(name: str, pretrained: Optional[str] = None, *, cache_dir: Optional[str] = None,
              **overrides: Any) -> Tuple[nn.Module, Callable, Callable]:
    """Load an open_clip CLIP model.

    name: a built-in open_clip name (e.g. "RN50", "ViT-B-16"), a path to an open_clip JSON config, or a
        transformers CLIP folder (`CLIPModel.save_pretrained`; its weights are loaded from it).
    pretrained: a pretrained tag (downloaded by open_clip) or a local checkpoint file.
    cache_dir: where open_clip keeps downloaded weights (None: its default).
    overrides: deep-merged into the config (e.g. embed_dim=64, vision_cfg={"width": 16}).
    Returns (model in eval mode, teacher preprocess (normalised, as open_clip's), tokenizer).
    """
    hf_dir = hf_clip.is_hf_clip_dir(name)
    if hf_dir and pretrained:
        raise ValueError(f"load_clip: {name} is a transformers CLIP folder whose weights are loaded from it; "
                         f"do not pass pretrained ({pretrained!r})")
    model_cfg, pp_overlay = resolve_config(name)
    model_cfg = deep_merge(model_cfg, overrides)
    pp = asdict(PreprocessCfg())
    pp["size"] = model_cfg.get("vision_cfg", {}).get("image_size", pp["size"])
    pp = merge_preprocess_dict(pp, pp_overlay)
    checkpoint = None
    if pretrained:
        checkpoint, pp = _pretrained_checkpoint(name, str(pretrained), model_cfg, pp, cache_dir)
    model = instantiate(model_cfg, f"load_clip: model config {name}")
    if hf_dir:
        load_weights_strict(model, hf_clip.open_clip_state_dict(name, model_cfg),
                            f"load_clip: the transformers CLIP weights in {name}")
    elif checkpoint:
        _load_open_clip_checkpoint(model, checkpoint, name)
    model.eval()
    model.visual.preprocess_cfg = pp
    setattr(model, SOURCE_ATTR, {"name": name, "pretrained": pretrained, "overrides": overrides,
                                 "model_cfg": model_cfg, "preprocess_cfg": pp})
    return model, make_preprocess(pp, normalize=True), make_tokenizer(model_cfg)


def hub_model_id(name: Optional[str], pretrained: Optional[str]) -> Optional[str]:
    """The Hugging Face hub id of an open_clip (name, tag) teacher, when open_clip knows one."""
    if not name or not pretrained:
        return None
    try:
        cfg = open_clip.get_pretrained_cfg(str(name).replace("/", "-"), str(pretrained)) or {}
    except Exception:  # unknown names / tags simply have no hub id
        return None
    hub = cfg.get("hf_hub") or ""
    return hub.strip("/") or None


def model_source(model: nn.Module) -> Dict[str, Any]:
    """The provenance recorded by load_clip (name, pretrained, overrides, model_cfg, preprocess_cfg)."""
    src = getattr(model, SOURCE_ATTR, None)
    if src is None:
        raise ValueError("this CLIP model was not created by bcos_clip.load_clip, so its config is unknown; "
                         "load it with bcos_clip.load_clip(name, pretrained)")
    return src


def set_eval_frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def checkpoint_state(path: str) -> Dict[str, torch.Tensor]:
    """Read an open_clip-style checkpoint file (state_dict / {'state_dict': ...} / safetensors)."""
    return load_state_dict(path)
