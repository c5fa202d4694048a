"""The demo's training stages: the tiny CLIP teacher and the distilled B-cos students.

The teacher comes from ``bcos_clip.apps.demo.teacher`` (cached by its own key); every student is
``bcos_clip.train.train(TrainConfig)`` — bcosify the teacher, distil against it — run as a demo stage
(``StageRunner``) whose arguments are the TrainConfig and the teacher's digest, so a second demo run
reuses a finished student and a changed setting trains it again from scratch.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from bcos_clip.apps.demo.settings import DemoSettings, TeacherSettings
from bcos_clip.apps.demo.stages import StageRunner
from bcos_clip.apps.demo.teacher import pretrain_teacher
from bcos_clip.data.shapes.writer import WorldPaths
from bcos_clip.runtime.hashing import file_digest
from bcos_clip.runtime.runfiles import read_metrics
from bcos_clip.train import TrainConfig, train

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "latest"


def teacher_paths(world: WorldPaths, out_dir: Path, arch: str, settings: TeacherSettings, seed: int,
                  quick: bool) -> Dict[str, str]:
    """Train (or reuse) the teacher. Returns {"model": its JSON config, "pretrained": its weights,
    "digest": a digest of the weights} (``bcos_clip.load_clip(model, pretrained)`` loads it)."""
    vision = dict(settings.vision) if settings.vision is not None else None
    ckpt = pretrain_teacher(world, out_dir, arch=arch, steps=settings.steps, batch_size=settings.batch_size,
                            lr=settings.lr, seed=seed, quick=quick, warmup=settings.warmup,
                            weight_decay=settings.weight_decay, vision=vision)
    return {"model": str(ckpt.with_suffix(".json")), "pretrained": str(ckpt), "digest": file_digest(ckpt)}


def teacher_log(teacher: Dict[str, str]) -> Dict[str, Any]:
    """The teacher's training summary from its JSON (steps, seconds, final loss)."""
    meta = json.loads(Path(teacher["model"]).read_text()).get("teacher", {})
    config = meta.get("key", {}).get("config", {})
    return {"steps": config.get("steps"), "batch_size": config.get("batch_size"), "lr": config.get("lr"),
            "n_train": meta.get("n_train"), "train_seconds": meta.get("train_seconds"),
            "final_loss": meta.get("final_loss")}


def distill_config(world: WorldPaths, teacher: Dict[str, str], output: Path, settings: DemoSettings,
                   seed: int, device: str, loss: Optional[str] = None,
                   steps: Optional[int] = None) -> TrainConfig:
    """The TrainConfig of one student: the ``distill`` settings, optionally another loss / step count
    (None: the settings'), and what the demo sets itself (``DEMO_OWNED``: one checkpoint, at the end)."""
    overrides = {k: v for k, v in (("loss", loss), ("steps", steps)) if v is not None}
    return settings.train_config(model=teacher["model"], pretrained=teacher["pretrained"],
                                 train_data=world.train_shards, output=str(output), seed=seed, device=device,
                                 **overrides)


def _run_distill(cfg: TrainConfig) -> Dict[str, Any]:
    summary = train(cfg)
    losses = [r["loss"] for r in read_metrics(Path(cfg.output)) if isinstance(r.get("loss"), (int, float))]
    checkpoint = Path(cfg.output) / CHECKPOINT
    return {"checkpoint": str(checkpoint), "digest": file_digest(checkpoint), "steps": summary["steps"],
            "loss": cfg.loss, "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "skipped_steps": summary["ranks"][0]["counters"].get("skipped_steps", 0)}


def distill_stage(runner: StageRunner, name: str, cfg: TrainConfig, teacher_digest: str) -> Dict[str, Any]:
    """Distil one student (or reuse it). Returns {"checkpoint", "digest", "steps", "loss", "first_loss",
    "final_loss", "skipped_steps"}; the checkpoint directory loads with ``bcos_clip.load``."""
    args = {"train_config": cfg.to_dict(), "teacher": teacher_digest}
    return runner.run(name, args, lambda: _run_distill(cfg), clear=[Path(cfg.output)])
