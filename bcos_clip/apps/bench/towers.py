"""Tower rows of `bcos-clip bench`: training step and inference of plain and B-cos image towers.

Variants of one open_clip model (random weights: speed does not depend on them):
- `plain`: the open_clip image tower on CLIP-normalised 3-channel images;
- `bcos-reference`: the B-cosified tower with the official-style formulas (apps.bench.reference);
- `bcos-formula`: the B-cosified tower with bcos_clip's reference formula (fast path off);
- `bcos-fast`: the B-cosified tower with the fast path (bcos_clip.nn.fused; Triton on CUDA);
- `bcos-fast-folded`: bcos-fast with eval BNs folded into the convs (inference only).
Training step = forward under autocast + (1 - cos(out, target)).mean() + backward (grads set to None).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.apps.bench.reference import to_reference
from bcos_clip.apps.bench.timing import GIB, Row, measure, throughput, timed_once
from bcos_clip.models import BcosCLIP, bcosify, load_clip
from bcos_clip.nn import fused
from bcos_clip.nn.fold import fold_batchnorms
from bcos_clip.runtime.precision import autocast

TINY_TEXT = dict(width=64, layers=1, heads=4, context_length=32)
QUICK_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "RN50": dict(embed_dim=64, text_cfg=TINY_TEXT,
                 vision_cfg=dict(layers=[1, 1, 1, 1], width=16, image_size=64, head_width=16)),
    "ViT-B-16": dict(embed_dim=64, text_cfg=TINY_TEXT,
                     vision_cfg=dict(width=64, layers=2, patch_size=8, image_size=32, head_width=16)),
}
VARIANTS = ("plain", "bcos-reference", "bcos-formula", "bcos-fast", "bcos-fast-folded")
# fast-path features per variant (None: all features of the current code; see nn.fused.FEATURES). The
# reference keeps bcos_clip's formulas for the layers it does not replace (LayerNorm, GELU), as the H200
# run measured it; `bcos-fast-v1` is the fast path as the H200 measured it on 2026-11-26 (the B-cos scale
# Functions only), for the accounting's validation.
VARIANT_FEATURES: Dict[str, Optional[Tuple[str, ...]]] = {
    "plain": None, "bcos-reference": (), "bcos-formula": None, "bcos-fast": None, "bcos-fast-v1": (),
}


def rescale_random_weights_(clip: nn.Module, row_norm: float = 3.0) -> nn.Module:
    """Make a random-weight open_clip image tower usable at B = 2, in place: open_clip's init zeroes each
    block's last BatchNorm scale and its small weights shrink every B = 2 layer towards 0 (embeddings of
    exactly 0). BatchNorm scales become 1 and every conv / linear weight row gets the norm ``row_norm``."""
    with torch.no_grad():
        for mod in clip.visual.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.fill_(1.0)
            elif isinstance(mod, (nn.Conv2d, nn.Linear)):
                rows = mod.weight.flatten(1).norm(dim=1).clamp_min(1e-8)
                mod.weight.mul_(row_norm / rows.view(-1, *[1] * (mod.weight.dim() - 1)))
    return clip


@dataclass
class ModelSet:
    """One architecture: the plain CLIP, its B-cosified twin and the variant towers, on a device."""

    name: str
    clip: nn.Module
    bcos: BcosCLIP
    device: torch.device
    channels_last: bool
    tokenizer: Any = None
    folded_model: Any = None  # the whole BcosCLIP with folded BNs (built on first use)
    towers: Dict[str, nn.Module] = field(default_factory=dict)
    compiled: Dict[str, Callable] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.bcos.image_size

    @property
    def embed_dim(self) -> int:
        return self.bcos.embed_dim


def build_modelset(name: str, device: torch.device, quick: bool) -> ModelSet:
    """Random-weight open_clip `name` (tiny config when quick, rescaled by `rescale_random_weights_` so
    that the explanation and zero-shot rows get non-zero B = 2 embeddings), bcosified (b=2, no biases)."""
    overrides = QUICK_OVERRIDES.get(name, {}) if quick else {}
    clip, _, tokenizer = load_clip(name, None, **overrides)
    clip = rescale_random_weights_(clip).to(device)
    bcos = bcosify(clip, b=2.0, bias=False).to(device)
    is_rn = not hasattr(clip.visual, "transformer")
    ms = ModelSet(name, clip, bcos, device, channels_last=is_rn, tokenizer=tokenizer)
    fmt = torch.channels_last if is_rn else torch.contiguous_format
    ms.towers["plain"] = clip.visual.to(memory_format=fmt)
    ms.towers["bcos-fast"] = bcos.visual.to(memory_format=fmt)
    ms.towers["bcos-formula"] = ms.towers["bcos-fast"]
    ms.towers["bcos-reference"] = to_reference(bcos.visual).to(memory_format=fmt)
    return ms


def folded_tower(ms: ModelSet) -> nn.Module:
    if "bcos-fast-folded" not in ms.towers:
        was = ms.bcos.visual.training
        ms.towers["bcos-fast-folded"] = fold_batchnorms(ms.bcos.visual.eval())
        ms.bcos.visual.train(was)
    return ms.towers["bcos-fast-folded"]


def tower_for(ms: ModelSet, variant: str) -> nn.Module:
    return folded_tower(ms) if variant == "bcos-fast-folded" else ms.towers[variant]


def input_fn(ms: ModelSet, variant: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """images (N, 3, H, W) in [0, 1] -> the tower's input (normalised 3 channels or [x, 1-x])."""
    pp = ms.bcos.source["preprocess_cfg"]
    mean = torch.tensor(pp["mean"], device=ms.device).view(1, 3, 1, 1)
    std = torch.tensor(pp["std"], device=ms.device).view(1, 3, 1, 1)
    fmt = torch.channels_last if ms.channels_last else torch.contiguous_format
    if variant == "plain":
        return lambda x: ((x - mean) / std).contiguous(memory_format=fmt)
    return lambda x: bnn.add_inverse(x).contiguous(memory_format=fmt)


def path_ctx(variant: str) -> contextlib.AbstractContextManager:
    """The fast-path switches a variant runs with: bcos-formula with the fast path off, the others with
    their VARIANT_FEATURES (None: as configured)."""
    if variant == "bcos-formula":
        return fused.fast_path(False)
    feats = VARIANT_FEATURES.get(variant)
    return fused.fast_path(True, features=feats) if feats is not None else contextlib.nullcontext()


def autocast_ctx(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The bench's ``bf16`` is bf16 autocast (open_clip's ``amp_bf16``); ``fp32`` none."""
    return autocast("amp_bf16" if precision == "bf16" else "fp32", device)


def images_for(ms: ModelSet, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(batch, 3, ms.image_size, ms.image_size, generator=g).to(ms.device)
    return x.contiguous(memory_format=torch.channels_last) if ms.channels_last else x


def _param_gib(module: nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / GIB


def make_train_step(ms: ModelSet, variant: str, run: Callable, batch: int, precision: str,
                    forward_only: bool = False) -> Callable[[], None]:
    """One training step (or its forward alone, grad enabled) of `run` (a tower or compiled tower)."""
    tower = tower_for(ms, variant)
    tower.train()
    images = images_for(ms, batch)
    target = torch.randn(batch, ms.embed_dim, device=ms.device)
    prep = input_fn(ms, variant)
    params = [p for p in tower.parameters()]
    for p in params:
        p.requires_grad_(True)

    def step() -> None:
        with path_ctx(variant), autocast_ctx(ms.device, precision):
            out = run(prep(images))
        if forward_only:
            return
        loss = 1.0 - F.cosine_similarity(out.float(), target, dim=-1).mean()
        loss.backward()
        for p in params:
            p.grad = None

    return step


def make_infer_step(ms: ModelSet, variant: str, run: Callable, batch: int, precision: str) -> Callable[[], None]:
    tower = tower_for(ms, variant)
    tower.eval()
    images = images_for(ms, batch)
    prep = input_fn(ms, variant)

    def step() -> None:
        with torch.no_grad(), path_ctx(variant), autocast_ctx(ms.device, precision):
            run(prep(images))

    return step


def tower_row(ms: ModelSet, variant: str, kind: str, batch: int, precision: str, iters: int,
              warmup: int, compiled: bool = False) -> Row:
    """kind: 'train' (step), 'train_fwd' (forward of the training step) or 'infer' (eval, no grad)."""
    row: Row = {"section": kind, "model": ms.name, "variant": variant, "batch": batch,
                "compiled": compiled, "precision": precision,
                "name": f"{kind}/{ms.name}/{variant}/b{batch}{'/compiled' if compiled else ''}"}
    run = ms.compiled[variant] if compiled else tower_for(ms, variant)
    if kind == "infer":
        step = make_infer_step(ms, variant, run, batch, precision)
    else:
        step = make_train_step(ms, variant, run, batch, precision, forward_only=kind == "train_fwd")
    base = torch.cuda.memory_allocated(ms.device) / GIB if ms.device.type == "cuda" else 0.0
    row.update(measure(step, ms.device, iters, warmup))
    if row["peak_mem_gib"] is not None:  # this tower's weights + what the step allocates
        row["peak_mem_gib"] = row["peak_mem_gib"] - base + _param_gib(tower_for(ms, variant))
    return throughput(row, batch)


def compile_variant(ms: ModelSet, variant: str, batch: int, precision: str) -> Row:
    """torch.compile the tower; the first training step (compile of forward + backward) is timed."""
    row: Row = {"section": "compile", "model": ms.name, "variant": variant, "batch": batch,
                "name": f"compile/{ms.name}/{variant}/b{batch}"}
    ms.compiled[variant] = torch.compile(tower_for(ms, variant))
    step = make_train_step(ms, variant, ms.compiled[variant], batch, precision)
    row["compile_s"] = timed_once(step, ms.device)
    row["second_call_s"] = timed_once(step, ms.device)
    return row
