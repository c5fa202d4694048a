"""Pre-train a tiny CLIP teacher contrastively on the shapes world (the offline stand-in for a real,
pretrained CLIP).

The model comes from ``bcos_clip.load_clip`` with one of the tiny open_clip configs in ``configs/``
(``tiny_rn.json``: ModifiedResNet width 16, ``tiny_vit.json``: ViT width 96, 3 layers, patch 8, fixed 2-D
sin-cos positions, class-token pooling and a convolutional stem ``conv_stem: [24, 48, 96]`` (three 3x3
stride-2 conv + BatchNorm + ReLU stages, ``bcos_clip.nn.ConvStem``); both 64 px, embed_dim 64, text
width 64 with 2 layers, context 32). With the single strided patch conv the tiny ViT learnt slowly
(48-50 % natural zero-shot after 1000 steps); with the conv stem and class-token pooling it reaches
78-85 % in 800 steps and 96-98 % in 1200 (sweep in ``configs/demo.yaml``). ``vision=`` overrides keys of the config's ``vision_cfg`` (``VISION_KEYS``).
The training shards are small, so they are
decoded once into memory (a uint8 tensor) and batches are drawn from it without augmentation (flips
and crops would break the captions' "on the left" / "in the top right").

Output (``out_dir``): ``teacher_<arch>.pt`` (an open_clip state_dict) and ``teacher_<arch>.json`` in
open_clip's hub format (``model_cfg`` + ``preprocess_cfg``) plus the training arguments and log under
``"teacher"``. So either of these loads the teacher::

    bcos_clip.load_clip("out/teacher_rn.json", pretrained="out/teacher_rn.pt")
    bcos_clip.load_clip("configs/tiny_rn.json", pretrained="out/teacher_rn.pt")

A second call with the same world and arguments returns the cached checkpoint.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
import webdataset as wds
from torch import Tensor, nn
from tqdm.auto import tqdm

from bcos_clip.data.shapes.writer import WorldPaths
from bcos_clip.models import load_clip
from bcos_clip.models.text import CLIP_LOGIT_SCALE
from bcos_clip.runtime.resources import CONFIGS, resource_file
from bcos_clip.runtime.runfiles import world_args
from bcos_clip.train.optim import lr_at, set_lr

log = logging.getLogger(__name__)

TEACHER_VERSION = 1
ARCH_CONFIGS: Dict[str, str] = {"rn": "tiny_rn.json", "vit": "tiny_vit.json"}
# Per-architecture defaults (the tiny ViT needs a longer warm-up and more steps).
ARCH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "rn": dict(steps=600, lr=1e-3, warmup=20, weight_decay=0.1),
    "vit": dict(steps=1200, lr=2e-3, warmup=50, weight_decay=0.1),
}
QUICK_STEPS = 70
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
MAX_LOGIT_SCALE = math.log(CLIP_LOGIT_SCALE)  # CLIP clamps its learned temperature here
# open_clip VisionTransformer config keys a teacher may override (``vision=`` / demo.yaml ``teacher.vision``).
VISION_KEYS = frozenset({"layers", "width", "head_width", "mlp_ratio", "patch_size", "pool_type",
                         "pos_embed_type", "no_ln_pre", "final_ln_after_pool", "ls_init_value", "conv_stem"})


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that decides the trained weights (also the cache key, with the world's arguments)."""

    arch: str
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    seed: int


def config_path(arch: str) -> Path:
    """The open_clip JSON config of ``arch`` ("rn" or "vit"), installed package or source tree."""
    if arch not in ARCH_CONFIGS:
        raise ValueError(f"unknown teacher arch {arch!r} (expected one of {sorted(ARCH_CONFIGS)})")
    return resource_file(CONFIGS, ARCH_CONFIGS[arch])


DECODED = ("jpg", "jpeg", "png", "webp", "txt")


def load_caption_shards(shards: str, image_size: int) -> Tuple[Tensor, List[str]]:
    """Decode img2dataset-style shards (brace pattern) into memory.

    Returns images (N, 3, image_size, image_size) uint8 and N captions.
    """
    images, captions = [], []
    # only images and captions are decoded: webdataset's default handlers would unpickle .pyd / .pth members
    dataset = wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode("torchrgb8", only=DECODED)
    for sample in tqdm(dataset, desc="teacher data", unit="img", mininterval=2.0):
        image = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
        if image is None or "txt" not in sample:
            raise ValueError(f"{sample.get('__url__')}: sample {sample.get('__key__')} lacks an image or .txt")
        if image.shape[-2:] != (image_size, image_size):
            image = F.interpolate(image[None].float(), size=(image_size, image_size), mode="bilinear",
                                  antialias=True, align_corners=False)[0].round().clamp(0, 255).byte()
        images.append(image)
        captions.append(sample["txt"])
    if not images:
        raise ValueError(f"no training samples in {shards}")
    return torch.stack(images), captions


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE (CLIP's loss) over a batch of matching pairs.

    image_emb, text_emb: (B, D) unit vectors; logit_scale: scalar (already exponentiated).
    Written here (8 lines) rather than imported from ``open_clip.loss`` because only ``models/`` and
    ``bcosify/`` may import open_clip; single-process, so no feature gathering is needed.
    """
    logits = logit_scale * image_emb @ text_emb.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW groups chosen by shape and module type, not by name: weight decay on the matrices and kernels
    (parameters with >= 2 dimensions: linear, conv and attention projections, embeddings) of any module
    but a normalisation layer; none on vectors and scalars (biases, norm gains, the class token, the
    logit scale)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.ndim >= 2 and not isinstance(module, NORM_LAYERS) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _normalizer(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """uint8 (B, 3, H, W) -> CLIP-normalised float, with the mean/std ``load_clip`` recorded."""
    pp = model.visual.preprocess_cfg
    mean = torch.tensor(pp["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return lambda x: (x.float() / 255.0 - mean) / std


def _train_loop(model: nn.Module, images: Tensor, tokens: Tensor, cfg: TeacherConfig) -> List[dict]:
    """AdamW + warm-up/cosine over random batches; returns the per-step log."""
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    normalize = _normalizer(model)
    n, order, pos = images.shape[0], torch.empty(0, dtype=torch.long), 0
    history: List[dict] = []
    model.train()
    bar = tqdm(range(cfg.steps), desc=f"teacher ({cfg.arch})", unit="step")
    for step in bar:
        if pos + cfg.batch_size > order.numel():  # a fresh permutation each epoch
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        lr = lr_at(step, cfg.lr, cfg.steps, cfg.warmup)
        set_lr(optimizer, lr)
        img = model.encode_image(normalize(images[idx]), normalize=True)
        txt = model.encode_text(tokens[idx], normalize=True)
        loss = contrastive_loss(img, txt, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            acc = (img @ txt.t()).argmax(1).eq(torch.arange(len(idx))).float().mean().item()
        history.append({"step": step, "loss": round(loss.item(), 5), "lr": lr, "batch_i2t_acc": acc,
                        "logit_scale": round(model.logit_scale.exp().item(), 3)})
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
    model.eval()
    return history


def _resolve_config(arch: str, steps: Optional[int], batch_size: int, lr: Optional[float], seed: int,
                    quick: bool, warmup: Optional[int] = None,
                    weight_decay: Optional[float] = None) -> TeacherConfig:
    if arch not in ARCH_DEFAULTS:
        raise ValueError(f"unknown teacher arch {arch!r} (expected one of {sorted(ARCH_DEFAULTS)})")
    d = ARCH_DEFAULTS[arch]
    steps = int(steps if steps is not None else (QUICK_STEPS if quick else d["steps"]))
    if steps < 1 or batch_size < 2:
        raise ValueError(f"pretrain_teacher: steps must be >= 1 and batch_size >= 2 (got {steps}, {batch_size})")
    warmup = min(int(d["warmup"] if warmup is None else warmup), steps // 5)
    weight_decay = float(d["weight_decay"] if weight_decay is None else weight_decay)
    lr = float(lr if lr is not None else d["lr"])
    if warmup < 0 or weight_decay < 0 or not lr > 0:
        raise ValueError(f"pretrain_teacher: warmup and weight_decay must be >= 0 and lr > 0 "
                         f"(got {warmup}, {weight_decay}, {lr})")
    return TeacherConfig(arch=arch, steps=steps, batch_size=int(batch_size), lr=lr, warmup=warmup,
                         weight_decay=weight_decay, seed=int(seed))


def model_config(arch: str, vision: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The open_clip model config of ``arch`` with ``vision`` merged over its ``vision_cfg``."""
    cfg = json.loads(config_path(arch).read_text())
    if vision:
        unknown = sorted(set(vision) - VISION_KEYS)
        if unknown:
            raise KeyError(f"teacher vision_cfg: unknown key(s) {unknown} (expected some of {sorted(VISION_KEYS)})")
        cfg["vision_cfg"] = {**cfg["vision_cfg"], **vision}
    return cfg


def pretrain_teacher(world: WorldPaths, out_dir: Union[str, os.PathLike], *, arch: str = "rn",
                     steps: Optional[int] = None, batch_size: int = 128, lr: Optional[float] = None,
                     seed: int = 0, quick: bool = False, warmup: Optional[int] = None,
                     weight_decay: Optional[float] = None, vision: Optional[Dict[str, Any]] = None) -> Path:
    """Train (or reuse) the tiny CLIP teacher on ``world``'s training shards.

    Defaults per arch in ``ARCH_DEFAULTS`` (rn: 600 steps, AdamW 1e-3; vit: 1200 steps, 2e-3 with a
    longer warm-up); ``quick``: ``QUICK_STEPS`` steps; ``warmup`` / ``weight_decay`` / ``vision``
    (keys of the model's ``vision_cfg``) override them. Returns the path of the state_dict
    (``out_dir/teacher_<arch>.pt``); its JSON (same stem) holds the model config and the training log.
    """
    cfg = _resolve_config(arch, steps, batch_size, lr, seed, quick, warmup, weight_decay)
    model_cfg = model_config(arch, vision)
    key = {"version": TEACHER_VERSION, "world": world_args(world.root), "config": asdict(cfg),
           "model_cfg": model_cfg}
    out = Path(out_dir)
    ckpt, meta_path = out / f"teacher_{arch}.pt", out / f"teacher_{arch}.json"
    if ckpt.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()).get("teacher", {}).get("key") == key:
                log.info("teacher: reusing %s", ckpt)
                return ckpt
        except json.JSONDecodeError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model, _, tokenizer = load_clip(str(config_path(arch)), vision_cfg=model_cfg["vision_cfg"])
    t0 = time.time()
    images, captions = load_caption_shards(world.train_shards, int(model_cfg["vision_cfg"]["image_size"]))
    tokens = tokenizer(captions)
    t1 = time.time()
    history = _train_loop(model, images, tokens, cfg)
    t2 = time.time()
    tmp = ckpt.with_suffix(".pt.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, ckpt)
    last = history[-min(10, len(history)):]
    meta = {"model_cfg": model_cfg, "preprocess_cfg": dict(model.visual.preprocess_cfg),
            "teacher": {"key": key, "checkpoint": ckpt.name, "n_train": len(captions),
                        "data_seconds": round(t1 - t0, 2), "train_seconds": round(t2 - t1, 2),
                        "final_loss": sum(h["loss"] for h in last) / len(last), "log": history}}
    meta_path.write_text(json.dumps(meta, indent=1))
    log.info("teacher (%s): %d steps in %.1f s, final loss %.3f -> %s", arch, cfg.steps, t2 - t1,
             meta["teacher"]["final_loss"], ckpt)
    return ckpt


__all__ = ["ARCH_CONFIGS", "ARCH_DEFAULTS", "QUICK_STEPS", "TeacherConfig", "config_path",
           "contrastive_loss", "load_caption_shards", "param_groups", "pretrain_teacher"]
