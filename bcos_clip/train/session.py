"""Everything a run needs, built from a TrainConfig: data plan, models, optimiser, text targets, resume.

``build_session(cfg, info)`` is the factory; the loop (``bcos_clip.train.loop``) only runs it.
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bcos_clip.data.stream.loader import StreamSpec, clamp_workers, first_sample_fields
from bcos_clip.data.stream.sources import ShardSet, expand_train_spec, resolve_num_samples
from bcos_clip.data.stream.transforms import CropSpec
from bcos_clip.models import BcosCLIP, PlainCLIP
from bcos_clip.runtime.distributed import DistInfo, broadcast_module_
from bcos_clip.runtime.hashing import text_tower_digest
from bcos_clip.runtime.precision import Precision, resolve_precision
from bcos_clip.train.checkpoint import find_resume, load_state, restore_rng_states
from bcos_clip.train.config import TrainConfig
from bcos_clip.train.losses import TEXT_LOSSES
from bcos_clip.train.optim import make_optimizer
from bcos_clip.train.task import DistillTask, build_models, prepare_devices
from bcos_clip.train.text_targets import CaptionCache, TextTargets, class_prompt_embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """Steps and batches: identical on every rank, so no rank waits for another at an epoch's end."""

    num_samples: int
    world_size: int
    batch_size: int
    accum_freq: int
    steps_per_epoch: int
    total_steps: int
    workers: int

    @property
    def micro_per_epoch(self) -> int:
        """Batches each rank reads per epoch."""
        return self.steps_per_epoch * self.accum_freq

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.accum_freq


def plan_run(cfg: TrainConfig, num_samples: int, world_size: int, workers: int) -> RunPlan:
    """``steps_per_epoch = ceil(ceil(samples / (batch * world)) / accum)``; ``--steps`` or epochs x that."""
    per_rank = math.ceil(num_samples / (cfg.batch_size * world_size))
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.accum_freq))
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    return RunPlan(num_samples, world_size, cfg.batch_size, cfg.accum_freq, steps_per_epoch, total, workers)


@dataclass
class Session:
    """The built run (mutable: the loop advances ``step`` and ``counters``)."""

    cfg: TrainConfig
    info: DistInfo
    plan: RunPlan
    shardset: ShardSet
    stream: StreamSpec
    teacher: PlainCLIP
    student: BcosCLIP
    task: DistillTask
    ddp: Optional[DistributedDataParallel]
    optimizer: torch.optim.Optimizer
    scaler: Optional[Any]
    precision: Precision
    text_cache: Optional[CaptionCache]
    resumed_from: Optional[Path]
    step: int = 0
    counters: Dict[str, int] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def resolve_text_mode(cfg: TrainConfig, shardset: ShardSet) -> str:
    """``captions`` when the shards carry ``.txt`` (or asked for), else ``classnames`` (a clear fallback)."""
    fields = first_sample_fields(shardset)
    has_txt = "txt" in fields
    if cfg.text_source == "captions" and not has_txt:
        raise ValueError(f"--text-source captions: the first sample of {shardset.shards[0]} has no .txt "
                         f"caption (fields {fields}); use --text-source classnames [--classnames FILE]")
    if cfg.text_source != "auto":
        return cfg.text_source
    if has_txt:
        return "captions"
    log.warning("text_kd: the shards carry no captions (.txt); distilling against class prompts of %s",
                cfg.classnames or "open_clip's 1000 ImageNet classes (pass --classnames FILE for other data)")
    return "classnames"


def build_text_targets(cfg: TrainConfig, shardset: ShardSet, student: BcosCLIP, info: DistInfo):
    if cfg.loss not in TEXT_LOSSES:
        return None, None
    mode = resolve_text_mode(cfg, shardset)
    if mode == "classnames":
        emb = class_prompt_embeddings(student, cfg.classnames, cfg.templates, info.device)
        return TextTargets(student, mode, info.device, class_embeddings=emb), None
    cache = CaptionCache(cfg.text_cache if info.is_main else None,
                         text_tower_digest(student) if cfg.text_cache and info.is_main else "")
    return TextTargets(student, mode, info.device, cache=cache), cache


def _wrap_visual(student: BcosCLIP, cfg: TrainConfig, info: DistInfo):
    visual: nn.Module = student.visual
    ddp = None
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        ddp = DistributedDataParallel(visual, device_ids=ids)
        visual = ddp
    if cfg.torchcompile:
        visual = torch.compile(visual)
    return visual, ddp


def _restore(session: Session, state: Dict[str, Any]) -> None:
    session.optimizer.load_state_dict(state["optimizer"])
    if session.scaler is not None and state.get("scaler") is not None:
        session.scaler.load_state_dict(state["scaler"])
    session.step = int(state["step"])
    session.counters = dict(state.get("counters", {}))
    restore_rng_states(state["rng"])
    old = state.get("plan", {})
    if old and (old.get("steps_per_epoch"), old.get("world_size")) != (session.plan.steps_per_epoch,
                                                                      session.plan.world_size):
        log.warning("resuming with a different plan (%s -> %s): the data order differs from the "
                    "interrupted run", old, session.plan)
    log.info("resumed from %s at step %d", session.resumed_from, session.step)


def build_session(cfg: TrainConfig, info: DistInfo) -> Session:
    """Build data plan, models (resumed if asked), DDP wrapper, optimiser and text targets."""
    seed_everything(cfg.seed)
    resume_dir = find_resume(cfg.output, cfg.resume)
    resume_state = load_state(resume_dir) if resume_dir is not None else None  # a bad file fails before any work
    shardset = expand_train_spec(cfg.train_data, cfg.folder_chunk_size,
                                 count_missing=cfg.train_num_samples is None)
    num_samples = resolve_num_samples(shardset, cfg.train_num_samples)
    workers = clamp_workers(cfg.workers, len(shardset.shards), info.world_size, cfg.dataset_resampled)
    plan = plan_run(cfg, num_samples, info.world_size, workers)
    teacher, student = build_models(cfg, resume_dir)
    precision = resolve_precision(cfg.precision, info.device)
    channels_last = info.device.type == "cuda"
    prepare_devices(teacher, student, info.device, precision, channels_last)
    broadcast_module_(teacher, info)
    student.train()
    visual, ddp = _wrap_visual(student, cfg, info)
    targets, cache = build_text_targets(cfg, shardset, student, info)
    task = DistillTask(teacher, student, visual, cfg.loss, cfg.loss_params(), precision, targets, channels_last)
    stream = StreamSpec(cfg.batch_size, CropSpec(student.image_size, (cfg.crop_scale_min, 1.0)), cfg.seed,
                        cfg.shuffle_buffer, cfg.dataset_resampled)
    session = Session(cfg, info, plan, shardset, stream, teacher, student, task, ddp,
                      make_optimizer(student.visual.parameters(), cfg), precision.make_scaler(), precision,
                      cache, resume_dir)
    if resume_state is not None:
        _restore(session, resume_state)
    return session
