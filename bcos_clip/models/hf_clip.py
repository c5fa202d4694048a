"""transformers CLIP folders (`CLIPModel.save_pretrained`) as open_clip models.

A folder with a config.json of model_type "clip" and its weights maps onto open_clip's CLIP with a
VisionTransformer image tower and the standard text transformer:

- vision: `patch_embedding` -> `conv1`, `class_embedding`, `position_embedding` -> `positional_embedding`,
  `pre_layrnorm` -> `ln_pre`, `post_layernorm` -> `ln_post` (open_clip applies it to every token, then
  takes the class token: the same as HF's pooled LayerNorm), `visual_projection.weight.T` -> `proj`;
- text: token / position embeddings, causal transformer, `final_layer_norm` -> `ln_final`,
  `text_projection.weight.T` -> `text_projection`; pooling at the first `eos_token_id` (open_clip
  pool_type "eos"), or at the argmax token for legacy configs with eos_token_id 2 (as transformers does);
- every block: q/k/v packed into `in_proj`, `out_proj`, `layer_norm1/2` -> `ln_1/2`, `fc1/fc2` ->
  `c_fc/c_proj`; `hidden_act` "quick_gelu" -> open_clip `quick_gelu=True`, "gelu" -> nn.GELU;
- `logit_scale` as is.

The tokenizer: open_clip's SimpleTokenizer when the folder's tokenizer is the CLIP BPE (same vocabulary
and merges; also when the folder has no tokenizer files and the vocabulary size is 49408), otherwise the
folder's own tokenizer through open_clip's HFTokenizer. `bcos_clip.save` copies such a tokenizer into the
checkpoint (`tokenizer/`), so the checkpoint reloads without the original folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from bcos_clip.models.hf_tokenizer import tokenizer_settings
from bcos_clip.models.state_diff import CheckpointMismatchError
from bcos_clip.models.torch_files import load_tensors

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
LEGACY_EOS_ID = 2  # transformers < 4.31 configs: pool at the argmax token
ACTIVATIONS = {"quick_gelu": True, "gelu": False}  # hidden_act -> open_clip quick_gelu
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes -> open_clip interpolation
# per-block renames (HF suffix -> open_clip suffix); q/k/v are packed separately
BLOCK_RENAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                 "self_attn.out_proj": "attn.out_proj"}
# top-level renames (open_clip key -> HF key)
VISION_RENAMES = {"visual.class_embedding": "vision_model.embeddings.class_embedding",
                  "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
                  "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
                  "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
                  "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
                  "visual.ln_post.weight": "vision_model.post_layernorm.weight",
                  "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
TEXT_RENAMES = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
                "positional_embedding": "text_model.embeddings.position_embedding.weight",
                "ln_final.weight": "text_model.final_layer_norm.weight",
                "ln_final.bias": "text_model.final_layer_norm.bias",
                "logit_scale": "logit_scale"}
TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def is_hf_clip_dir(path: PathLike) -> bool:
    """A folder holding a transformers config.json of model_type "clip" (a full CLIPModel)."""
    p = Path(path)
    if not (p / CONFIG_NAME).is_file():
        return False
    try:
        cfg = json.loads((p / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("model_type") == "clip"


def _hf_config(directory: Path):
    try:
        from transformers import CLIPConfig
    except ImportError as exc:
        raise ValueError(f"load_clip: {directory} is a transformers CLIP folder; reading it needs the "
                         "transformers package (pip install 'bcos_clip[hf]')") from exc
    try:
        return CLIPConfig.from_pretrained(str(directory))
    except Exception as exc:  # transformers / huggingface_hub raise their own validation errors
        text = str(exc).strip().splitlines()
        raise ValueError(f"{directory / CONFIG_NAME}: not a valid transformers CLIP config: "
                         f"{' '.join(ln.strip() for ln in text) or type(exc).__name__}") from exc


def _mlp_ratio(sub: Any, tower: str) -> float:
    ratio = sub.intermediate_size / sub.hidden_size
    if int(sub.hidden_size * ratio) != sub.intermediate_size:
        raise ValueError(f"{tower}: intermediate_size {sub.intermediate_size} is not expressible as an open_clip "
                         f"mlp_ratio of hidden_size {sub.hidden_size}")
    return ratio


def _norm_kwargs(sub: Any) -> Dict[str, Any]:
    eps = float(getattr(sub, "layer_norm_eps", 1e-5))
    return {"norm_kwargs": {"eps": eps}} if eps != 1e-5 else {}


def _quick_gelu(cfg: Any, where: Path) -> bool:
    acts = {cfg.text_config.hidden_act, cfg.vision_config.hidden_act}
    if len(acts) != 1 or not acts <= set(ACTIVATIONS):
        raise ValueError(f"{where / CONFIG_NAME}: hidden_act {sorted(acts)} is not supported (open_clip needs one "
                         f"activation for both towers, one of {sorted(ACTIVATIONS)})")
    return ACTIVATIONS[acts.pop()]


def config_to_open_clip(cfg: Any, where: Path) -> Dict[str, Any]:
    """A transformers CLIPConfig -> the equivalent open_clip model config dict."""
    t, v = cfg.text_config, cfg.vision_config
    if v.num_channels != 3:
        raise ValueError(f"{where / CONFIG_NAME}: vision num_channels {v.num_channels} (open_clip needs 3)")
    if v.hidden_size % v.num_attention_heads:
        raise ValueError(f"{where / CONFIG_NAME}: vision hidden_size {v.hidden_size} is not divisible by "
                         f"num_attention_heads {v.num_attention_heads}")
    vision_cfg = {"layers": v.num_hidden_layers, "width": v.hidden_size,
                  "head_width": v.hidden_size // v.num_attention_heads, "mlp_ratio": _mlp_ratio(v, "vision_config"),
                  "patch_size": v.patch_size, "image_size": v.image_size, **_norm_kwargs(v)}
    text_cfg = {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size, "width": t.hidden_size,
                "heads": t.num_attention_heads, "layers": t.num_hidden_layers,
                "mlp_ratio": _mlp_ratio(t, "text_config"), **_norm_kwargs(t)}
    if t.eos_token_id == LEGACY_EOS_ID:
        text_cfg["pool_type"] = "argmax"
    else:
        text_cfg.update(pool_type="eos", eos_id=int(t.eos_token_id))
    return {"embed_dim": int(cfg.projection_dim), "quick_gelu": _quick_gelu(cfg, where),
            "vision_cfg": vision_cfg, "text_cfg": text_cfg}


def preprocess_overlay(directory: Path) -> Dict[str, Any]:
    """open_clip preprocess settings from preprocessor_config.json (mean, std, interpolation); {} if absent."""
    path = directory / PREPROCESSOR_NAME
    if not path.is_file():
        return {}
    pp = _read_json(path)
    out: Dict[str, Any] = {}
    if "image_mean" in pp:
        out["mean"] = tuple(float(x) for x in pp["image_mean"])
    if "image_std" in pp:
        out["std"] = tuple(float(x) for x in pp["image_std"])
    if pp.get("resample") in RESAMPLE:
        out["interpolation"] = RESAMPLE[pp["resample"]]
    return out


def open_clip_config(directory: PathLike) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(open_clip model config, preprocess overlay) for a transformers CLIP folder."""
    d = Path(directory)
    model_cfg = config_to_open_clip(_hf_config(d), d)
    model_cfg["text_cfg"].update(tokenizer_settings(d, model_cfg["text_cfg"]))
    return model_cfg, preprocess_overlay(d)


def _load_weight_file(path: Path) -> Dict[str, torch.Tensor]:
    """Tensors of a safetensors file or of a `torch.save` file read weights-only (never unpickled)."""
    if path.suffix != ".safetensors":
        return load_tensors(path, "weights file")
    try:
        from safetensors.torch import load_file
        return load_file(str(path))
    except Exception as exc:  # corrupt files raise library-specific errors
        raise ValueError(f"cannot read weights file {path}: {str(exc).strip().splitlines()[0]}") from None


def read_hf_weights(directory: PathLike) -> Dict[str, torch.Tensor]:
    """All tensors of a save_pretrained folder (single or sharded safetensors / pytorch_model.bin)."""
    d = Path(directory)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (d / single).is_file():
            return _load_weight_file(d / single)
        if (d / index).is_file():
            state: Dict[str, torch.Tensor] = {}
            for shard in sorted(set(_read_json(d / index).get("weight_map", {}).values())):
                state.update(_load_weight_file(d / shard))
            return state
    raise FileNotFoundError(f"{d} has a transformers CLIP config.json but no weights "
                            "(model.safetensors, its sharded index, or pytorch_model.bin)")


class _Taker:
    """Pops HF tensors by name, remembering what was missing."""

    def __init__(self, state: Dict[str, torch.Tensor]) -> None:
        self.state = {k: v for k, v in state.items() if not k.endswith(".position_ids")}
        self.missing: List[str] = []

    def __call__(self, key: str) -> Optional[torch.Tensor]:
        if key not in self.state:
            self.missing.append(key)
            return None
        return self.state.pop(key)


def _blocks(take: _Taker, src: str, dst: str, layers: int, out: Dict[str, torch.Tensor]) -> None:
    """HF encoder layers `src.encoder.layers.i` -> open_clip `dst.resblocks.i` (q/k/v packed)."""
    for i in range(layers):
        s, t = f"{src}.encoder.layers.{i}.", f"{dst}.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [take(f"{s}self_attn.{p}_proj.{kind}") for p in "qkv"]
            if all(x is not None for x in qkv):
                out[f"{t}attn.in_proj_{kind}"] = torch.cat(qkv)
            for hf_name, oc_name in BLOCK_RENAMES.items():
                tensor = take(f"{s}{hf_name}.{kind}")
                if tensor is not None:
                    out[f"{t}{oc_name}.{kind}"] = tensor


def map_hf_state(hf_state: Dict[str, torch.Tensor], model_cfg: Dict[str, Any],
                 where: str = "transformers CLIP weights") -> Dict[str, torch.Tensor]:
    """transformers CLIPModel state dict -> open_clip CLIP state dict (every HF tensor used exactly once).

    Raises CheckpointMismatchError listing missing / unused HF keys.
    """
    take = _Taker(hf_state)
    out: Dict[str, torch.Tensor] = {}
    for oc_name, hf_name in {**VISION_RENAMES, **TEXT_RENAMES}.items():
        tensor = take(hf_name)
        if tensor is not None:
            out[oc_name] = tensor
    for oc_name, hf_name in TRANSPOSED.items():
        tensor = take(hf_name)
        if tensor is not None:
            out[oc_name] = tensor.t().contiguous()
    _blocks(take, "vision_model", "visual.transformer", int(model_cfg["vision_cfg"]["layers"]), out)
    _blocks(take, "text_model", "transformer", int(model_cfg["text_cfg"]["layers"]), out)
    problems = []
    for title, keys in (("missing keys", take.missing), ("unexpected keys", sorted(take.state))):
        if keys:
            shown = ", ".join(keys[:12]) + (f", ... ({len(keys) - 12} more)" if len(keys) > 12 else "")
            problems.append(f"{len(keys)} {title}: {shown}")
    if problems:
        raise CheckpointMismatchError(f"{where} do not fit its config.json: {'; '.join(problems)}")
    return out


def open_clip_state_dict(directory: PathLike, model_cfg: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The folder's weights renamed / packed into open_clip's CLIP layout."""
    return map_hf_state(read_hf_weights(directory), model_cfg, where=f"transformers CLIP weights in {directory}")
