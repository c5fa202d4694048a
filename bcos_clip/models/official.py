"""Import the B-cosified CLIP RN50 checkpoints released with the paper (shrebox/B-cosification).

What their checkpoints hold (a PyTorch Lightning `last.ckpt`, read from their code):
- `state_dict` keys `model.model.<...>`: the Lightning module's `model` is their BcosifyNetwork, whose
  `model` is the converted OpenAI CLIP ModifiedResNet image tower. The stripped form of their
  `scripts/strip_checkpoints.py` (a plain dict saved as `.pth`) drops the first `model.` (or, with
  `--ema`, the `ema.module.`); EMA weights live under `ema.module.model.` (their EMA is a torch
  AveragedModel, which also stores `ema.n_averaged`). A Lightning file also holds epoch, global_step,
  pytorch-lightning_version, loops, callbacks, optimizer_states, lr_schedulers, hparams_name and
  hyper_parameters; they are read without unpickling anything foreign (`torch_files`), and only
  epoch, step and the experiment's names are kept.
- Their converter rebuilds every nn.Sequential positionally (`BcosSequential(*children)`), so each
  ResNet `downsample`, which open_clip and OpenAI CLIP key `-1` (AvgPool2d), `0` (conv), `1` (BN), is
  saved as `0`, `1`, `2`: `layerN.0.downsample.1.linear.weight` is the conv and `downsample.2.*` the
  BN. Checkpoints keyed with open_clip's downsample names are read as well (`tower_layout`).
- Every conv is their BcosifyConv2d: the weight is in a `linear` sub-conv (`<name>.linear.weight`), not
  unit-normalised, no max-out (max_out=1), B = 2 fixed (`fix_b`), y = z * |z| / ||x_patch|| with
  ||x_patch|| = sqrt(box-sum of x^2 + 1e-6): the same as bcos_clip's BcosConv2d.
- BatchNorms are their BatchNormUncentered2d without bias: eval y = gamma * x / sqrt(running_var + eps),
  the same as bcos_clip's UncenteredBatchNorm2d; `running_mean` and `num_batches_tracked` are stored but
  unused, so they are dropped. (Their training updates running_var with the biased batch variance;
  bcos_clip's with the unbiased one. Eval outputs do not depend on it.)
- The attention pool: no positional embedding, no biases; q/k/v_proj stay plain nn.Linear (their
  converter skips them) and c_proj is a BcosifyLinear (`attnpool.c_proj.linear.weight`) whose weight is
  read directly, so it acts as a plain linear too: BcosifySpec(qk="linear", official_v_proj=True,
  official_c_proj=True). The attention weights are detached in explanation mode, as bcos_clip does.
- Input: [x, 1-x] through a 6-channel Normalize with mean (m, 1-m) and std (s, s) (CLIP's m, s), the
  first conv trained from cat([W, -W]) / 2: BcosifySpec(input_encoding="normalize6").
- The SigLIP logit scale 10 and bias -10 are fixed training constants, not model weights.
- `clip_model.<...>` holds the frozen teacher image tower (OpenAI CLIP RN50); it is saved as the
  checkpoint's teacher tower. The text tower is not in the checkpoint: it comes from the teacher CLIP
  given to `import_official` (the CLI's `--teacher RN50 --pretrained openai`).
"""
from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from bcos_clip.bcosify import BcosifySpec
from bcos_clip.models.bcos_model import BcosCLIP, bcosify
from bcos_clip.models.checkpoint import read_safetensors, save
from bcos_clip.models.loading import load_clip
from bcos_clip.models.state_diff import load_weights_strict
from bcos_clip.models.torch_files import UnsafeFileError, load_training_checkpoint

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

OFFICIAL_SPEC = BcosifySpec(b=2.0, bias=False, attnpool_positional=False, qk="linear",
                            input_encoding="normalize6", official_c_proj=True, official_v_proj=True)
# where the image tower's keys start, by checkpoint form (checked in this order)
TOWER_PREFIXES = ("model.model.", "model.", "")
EMA_PREFIX = "ema.module.model."
TEACHER_PREFIX = "clip_model."
PROBE_KEY = "conv1.linear.weight"  # the stem conv: present in every form
DROPPED_SUFFIXES = (".running_mean", ".num_batches_tracked")  # stored by their BN, unused by uncentered BN
META_KEYS = ("epoch", "global_step", "pytorch-lightning_version")
HPARAM_KEYS = ("dataset", "base_network", "experiment_name")
# ResNet downsample children: their positional index -> open_clip's key (AvgPool2d "-1" has no tensors)
DOWNSAMPLE_KEY = re.compile(r"^(layer\d+\.\d+\.downsample)\.(\d+)\.(.*)$")
POSITIONAL_TO_OPEN_CLIP = {"0": "-1", "1": "0", "2": "1"}
LAYOUTS = ("positional", "open_clip")
TRUST_HINT = "if you trust the file, pass --trust-pickle (it runs the pickle)"


@dataclass
class OfficialCheckpoint:
    """The parts of an official checkpoint: tower tensors (their names, prefix removed), the teacher's
    image tower when stored, and metadata (epoch, step, experiment name)."""

    tower: Dict[str, torch.Tensor]
    teacher_visual: Optional[Dict[str, torch.Tensor]] = None
    meta: Dict[str, Any] = field(default_factory=dict)


def _load_file(path: Path, trust_pickle: bool) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if trust_pickle:  # the caller's explicit choice: runs the file's pickle
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint: {exc}") from exc
    else:
        try:
            obj = load_training_checkpoint(path, "official checkpoint")
        except UnsafeFileError as exc:
            raise UnsafeFileError(f"{exc}; {TRUST_HINT}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    return obj


def _meta(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    meta = {k: ckpt[k] for k in META_KEYS if isinstance(ckpt.get(k), (int, float, str))}
    hparams = ckpt.get("hyper_parameters")
    if isinstance(hparams, dict):
        meta.update({k: hparams[k] for k in HPARAM_KEYS if isinstance(hparams.get(k), str)})
    return meta


def read_official(path: PathLike, ema: bool = False, trust_pickle: bool = False) -> OfficialCheckpoint:
    """Read a released checkpoint (Lightning `.ckpt`, stripped `.pth` or safetensors)."""
    p = Path(path)
    ckpt = _load_file(p, trust_pickle)
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    prefixes = (EMA_PREFIX,) if ema else TOWER_PREFIXES
    prefix = next((pre for pre in prefixes if pre + PROBE_KEY in tensors), None)
    if prefix is None:
        where = "EMA weights (ema.module.model.*)" if ema else "a B-cosified image tower"
        hint = ("a stripped .pth holds one set of weights (model.*): import it without --ema"
                if ema and "model." + PROBE_KEY in tensors else "is this a B-cosification CLIP checkpoint?")
        raise ValueError(f"{p}: no {where} found: none of {[pre + PROBE_KEY for pre in prefixes]} is in the "
                         f"checkpoint ({hint})")
    others = [pre for pre in ("model.", EMA_PREFIX, TEACHER_PREFIX) if pre != prefix]
    tower = {k[len(prefix):]: v for k, v in tensors.items()
             if k.startswith(prefix) and not (prefix == "" and any(k.startswith(o) for o in others))}
    teacher = {k[len(TEACHER_PREFIX):]: v for k, v in tensors.items() if k.startswith(TEACHER_PREFIX)}
    return OfficialCheckpoint(tower, teacher or None, {"file": str(p), **_meta(ckpt), "source_prefix": prefix})


def tower_layout(tower: Dict[str, torch.Tensor]) -> str:
    """'positional' (their BcosSequential-rebuilt downsample: 0 AvgPool, 1 conv, 2 BN) or 'open_clip'
    (-1, 0, 1): decided by where the downsample convs are."""
    for key in tower:
        m = DOWNSAMPLE_KEY.match(key)
        if m and m.group(3) == "linear.weight":
            return "positional" if m.group(2) == "1" else "open_clip"
    return "positional"


def official_key(key: str, layout: str = "positional") -> Optional[str]:
    """Their tower key -> the BcosCLIP key it loads into (None: stored but unused, dropped).

    `<conv>.linear.weight` -> `visual.<conv>.weight` (also attnpool.c_proj); BN running_mean and
    num_batches_tracked -> None; a positional `downsample.1` / `downsample.2` -> open_clip's
    `downsample.0` / `downsample.1`; everything else (BN weight / running_var, attnpool q/k/v_proj.weight)
    keeps its name under `visual.`. Keys this mapping does not know stay as they are (a positional
    `downsample.0.*` becomes `downsample.-1.*`), so that a strict load lists them as unexpected.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if key.endswith(DROPPED_SUFFIXES):
        return None
    m = DOWNSAMPLE_KEY.match(key)
    if m and layout == "positional":
        key = f"{m.group(1)}.{POSITIONAL_TO_OPEN_CLIP.get(m.group(2), m.group(2))}.{m.group(3)}"
    if key.endswith(".linear.weight"):
        return f"visual.{key[:-len('.linear.weight')]}.weight"
    return f"visual.{key}"


def map_official_tower(tower: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], list, str]:
    """(state dict for BcosCLIP.visual, dropped keys, layout)."""
    layout = tower_layout(tower)
    mapped, dropped = {}, []
    for key, tensor in tower.items():
        target = official_key(key, layout)
        if target is None:
            dropped.append(key)
        else:
            mapped[target[len("visual."):]] = tensor
    return mapped, sorted(dropped), layout


def _teacher_tower(teacher: nn.Module, state: Optional[Dict[str, torch.Tensor]], where: str,
                   info: Dict[str, Any]) -> nn.Module:
    """The teacher image tower to save: the checkpoint's own copy when it has one."""
    tower = copy.deepcopy(teacher.visual)
    if state is None:
        info["teacher_visual"] = "from --teacher (the checkpoint holds none)"
        return tower
    load_weights_strict(tower, state, f"{where} (teacher image tower clip_model.*)")
    ref = teacher.visual.state_dict()
    same = all(torch.equal(ref[k].float(), v.float()) for k, v in tower.state_dict().items())
    info["teacher_visual"] = "from the checkpoint" + ("" if same else " (differs from --teacher's image tower)")
    if not same:
        log.warning("%s: the stored teacher image tower differs from the given teacher's: is --teacher the "
                    "CLIP the checkpoint was distilled from? (text tower taken from --teacher)", where)
    return tower


def import_official(path: Union[PathLike, OfficialCheckpoint], teacher: nn.Module, ema: bool = False,
                    trust_pickle: bool = False) -> Tuple[BcosCLIP, nn.Module, Dict[str, Any]]:
    """A released checkpoint -> (BcosCLIP reproducing their forward, teacher image tower, import info).

    path: the checkpoint file, or what `read_official` read from it.
    teacher: the open_clip RN CLIP (from `load_clip`) whose text tower, tokenizer and preprocessing go
    with the imported image tower; it is not modified.
    """
    if not isinstance(getattr(teacher, "visual", None), ModifiedResNet):
        raise ValueError(f"import-official: the teacher's image tower is {type(teacher.visual).__name__}; the "
                         "released B-cosified CLIP checkpoints are RN50s: use an RN teacher (e.g. RN50)")
    ckpt = path if isinstance(path, OfficialCheckpoint) else read_official(path, ema=ema, trust_pickle=trust_pickle)
    where = f"official checkpoint {ckpt.meta.get('file', '(in memory)')}"
    model = bcosify(teacher, spec=OFFICIAL_SPEC)
    mapped, dropped, layout = map_official_tower(ckpt.tower)
    load_weights_strict(model.visual, mapped, f"{where} ({layout} downsample keys)")
    info: Dict[str, Any] = {**ckpt.meta, "layout": layout, "tensors_loaded": len(mapped),
                            "dropped_unused": len(dropped), "spec": OFFICIAL_SPEC.to_dict()}
    teacher_visual = _teacher_tower(teacher, ckpt.teacher_visual, where, info)
    return model.eval(), teacher_visual.eval(), info


def import_official_to(path: PathLike, output: PathLike, teacher: str = "RN50",
                       pretrained: Optional[str] = "openai", ema: bool = False,
                       trust_pickle: bool = False) -> Tuple[Path, Dict[str, Any]]:
    """Import a released checkpoint and write a bcos_clip checkpoint to `output`.

    teacher / pretrained: the open_clip CLIP (name or JSON config; tag or local file) whose text tower,
    tokenizer and preprocessing the checkpoint gets. Writes `import_report.json` beside the weights.
    """
    ckpt = read_official(path, ema=ema, trust_pickle=trust_pickle)  # a bad file fails before the teacher loads
    clip, _, _ = load_clip(teacher, pretrained)
    model, teacher_visual, info = import_official(ckpt, clip)
    info["text_tower"] = f"{teacher} ({pretrained or 'random init'})"
    holder = nn.Module()
    holder.visual = teacher_visual
    out = save(model, output, teacher=holder, extra={"imported_from": "shrebox/B-cosification", "official": info})
    (out / "import_report.json").write_text(json.dumps(info, indent=2, default=str))
    return out, info
