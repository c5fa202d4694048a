"""The distillation loop: ``train(cfg)`` on one process or on every torchrun rank.

Per optimiser step: ``accum_freq`` batches (DDP syncs only on the last), a step is skipped on *all*
ranks when any rank sees an empty batch, a batch without text for ``text_kd``, a non-finite loss or
non-finite gradients (the decision is all-reduced first, so no rank waits in a collective alone).
Skipped steps are counted; more than ``--max-bad-steps`` stop the run, leaving the last checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from tqdm.auto import tqdm

from bcos_clip.data.stream.loader import make_epoch_loader
from bcos_clip.data.stream.transforms import to_unit_float
from bcos_clip.models import DegenerateEmbeddingError, save
from bcos_clip.models.strict_json import dumps_strict
from bcos_clip.runtime.distributed import (all_gather, all_reduce_sum, any_rank, barrier, broadcast_module_,
                                         cleanup_distributed, init_distributed)
from bcos_clip.runtime.hashing import model_digest
from bcos_clip.runtime.runfiles import SUMMARY
from bcos_clip.train.cadence import due_after
from bcos_clip.train.checkpoint import rng_states, save_checkpoint
from bcos_clip.train.config import TrainConfig
from bcos_clip.train.metrics import MetricsLogger
from bcos_clip.train.optim import clip_gradients_, lr_at, set_lr
from bcos_clip.train.reporters import RunInfo, check_reporters
from bcos_clip.train.run_folder import check_run_folder, clear_run
from bcos_clip.train.run_log import log_lines_above_bars, progress_line, run_log_file
from bcos_clip.train.session import Session, build_session
from bcos_clip.train.zeroshot_check import ZeroShotCheck

log = logging.getLogger(__name__)


class Trainer:
    """Runs a built :class:`Session` to ``plan.total_steps``."""

    def __init__(self, session: Session) -> None:
        s = self.s = session
        cfg, info = s.cfg, s.info
        if info.is_main:
            Path(cfg.output).mkdir(parents=True, exist_ok=True)
            cfg.save_json(Path(cfg.output))
        resumed = s.resumed_from is not None
        self.metrics = MetricsLogger(cfg.output, info.is_main, cfg.report_to, resume_step=s.step if resumed else None,
                                     run=RunInfo(cfg.output, cfg.to_dict(), resumed, cfg.wandb_project_name,
                                                 cfg.wandb_notes))
        self.zeroshot = (ZeroShotCheck(cfg.zeroshot_data, s.student.image_size, cfg.zeroshot_samples)
                         if cfg.zeroshot_data and info.is_main else None)
        if (cfg.zeroshot_every or cfg.zeroshot_frequency) and not cfg.zeroshot_data and info.is_main:
            log.warning("--zeroshot-every / --zeroshot-frequency without --zeroshot-data: no zero-shot check "
                        "(give a CLIP_benchmark wds/ classification folder; open_clip_train's --imagenet-val "
                        "is not read)")
        self.counters: Counter = Counter(s.counters)
        self.shards_seen: set = set()
        self.params = [p for p in s.student.visual.parameters() if p.requires_grad]
        self.last_checkpoint: Optional[Path] = s.resumed_from
        self.saved_step = s.step if s.resumed_from else -1
        self.window = {"loss": 0.0, "n": 0, "images": 0, "t": time.perf_counter()}
        self.grad_norm = float("nan")
        self.bar = None
        self.used_images = 0  # images of steps that computed a loss, in this session

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        s = self.s
        plan = s.plan
        log.info("run %s (%s): %d samples, %d steps/epoch, %d steps, global batch %d, %d workers/rank, precision %s",
                 s.cfg.output, f"resumed from {s.resumed_from} at step {s.step}" if s.resumed_from else "new",
                 plan.num_samples, plan.steps_per_epoch, plan.total_steps, plan.global_batch, plan.workers,
                 s.precision.name)
        self.bar = tqdm(total=plan.total_steps, initial=s.step, disable=not s.info.is_main,
                        desc="distil", unit="step", dynamic_ncols=True)
        try:
            with log_lines_above_bars():
                while s.step < plan.total_steps:
                    self._run_epoch()
        finally:
            self.bar.close()
            self.metrics.close()
        broadcast_module_(s.student.visual, s.info)  # rank 0's BatchNorm statistics everywhere
        if self.saved_step != s.step:
            self._save()
        return self._summary()

    def _run_epoch(self) -> None:
        s, plan = self.s, self.s.plan
        epoch, offset = divmod(s.step, plan.steps_per_epoch)
        last = min(plan.steps_per_epoch, plan.total_steps - epoch * plan.steps_per_epoch)
        loader = make_epoch_loader(s.shardset, s.stream, epoch, plan.micro_per_epoch, offset * plan.accum_freq,
                                   plan.workers, pin_memory=s.info.device.type == "cuda")
        batches = iter(loader)
        for _ in range(last - offset):
            group = [next(batches) for _ in range(plan.accum_freq)]
            loss = self._step(group)
            s.step += 1
            self.bar.update(1)
            self._after_step(loss, epoch)
        del batches, loader

    # -- one optimiser step --------------------------------------------------------------------
    def _step(self, group: List[Dict[str, Any]]) -> Optional[torch.Tensor]:
        s = self.s
        s.optimizer.zero_grad(set_to_none=True)
        losses, reason = [], None
        for i, batch in enumerate(group):
            self._account(batch)
            if reason:
                continue
            images, text, own, reason = self._prepare(batch)
            reason = self._agree(reason)
            if reason:
                continue
            loss = s.task.loss(images, text, own)
            reason = self._agree(None if bool(torch.isfinite(loss)) else "nonfinite_loss")
            if reason:
                continue
            self._backward(loss / len(group), sync=i == len(group) - 1)
            losses.append(loss.detach())
            self.used_images += int(images.shape[0])
        if reason:
            return self._skip(reason)
        return self._optimizer_step(torch.stack(losses).mean())

    def _prepare(self, batch: Dict[str, Any]):
        s = self.s
        images = to_unit_float(batch["images"].to(s.info.device, non_blocking=True))
        if images.shape[0] == 0:
            return None, None, None, "empty_batch"
        text, own = s.task.text_for(batch["captions"], batch["labels"].to(s.info.device))
        if s.task.needs_text and text is None:
            return None, None, None, "batch_without_captions"
        return images, text, own, None

    def _agree(self, reason: Optional[str]) -> Optional[str]:
        """Every rank skips when any rank has a reason to."""
        if self.s.info.distributed and any_rank(reason is not None, self.s.info):
            return reason or "other_rank_skipped"
        return reason

    def _backward(self, loss: torch.Tensor, sync: bool) -> None:
        s = self.s
        ctx = s.ddp.no_sync() if (s.ddp is not None and not sync) else contextlib.nullcontext()
        with ctx:
            (s.scaler.scale(loss) if s.scaler is not None else loss).backward()

    def _optimizer_step(self, loss: torch.Tensor) -> Optional[torch.Tensor]:
        s, cfg = self.s, self.s.cfg
        if s.scaler is not None:
            s.scaler.unscale_(s.optimizer)
        norm = clip_gradients_(self.params, cfg.agc_clip, cfg.agc_eps, cfg.grad_clip_norm)
        finite = bool(torch.isfinite(norm))
        if not finite and s.scaler is None:
            return self._skip("nonfinite_grad")
        self.grad_norm = float(norm)
        set_lr(s.optimizer, lr_at(s.step, cfg.lr, s.plan.total_steps, cfg.warmup, cfg.lr_scheduler))
        if s.scaler is not None:
            s.scaler.step(s.optimizer)  # skips the update itself when gradients overflowed
            s.scaler.update()
            if not finite:
                self.counters["amp_overflow_steps"] += 1
                return None
        else:
            s.optimizer.step()
        return loss

    def _skip(self, reason: str) -> None:
        self.s.optimizer.zero_grad(set_to_none=True)
        self.counters[reason] += 1
        self.counters["skipped_steps"] += 1
        log.warning("step %d skipped (%s); %d skipped so far", self.s.step + 1, reason,
                    self.counters["skipped_steps"])
        if self.counters["skipped_steps"] > self.s.cfg.max_bad_steps:
            kept = self.last_checkpoint or "none written yet"
            raise RuntimeError(f"stopping at step {self.s.step + 1}: {self.counters['skipped_steps']} skipped steps "
                               f"exceed --max-bad-steps {self.s.cfg.max_bad_steps} ({self._skip_counts()}); "
                               f"the last checkpoint is intact: {kept}")
        return None

    def _skip_counts(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items()) if k != "skipped_steps")

    def _account(self, batch: Dict[str, Any]) -> None:
        for kind, n in batch["bad"].items():
            self.counters[f"bad_data_{kind}"] += n
        if self.s.task.needs_text and self.s.task.text_targets.mode == "captions":
            missing = sum(c is None for c in batch["captions"])
            if missing:
                if not self.counters["bad_data_no_caption"]:
                    log.warning("samples without a caption (.txt): distilled without an own caption; "
                                "counted as bad_data_no_caption")
                self.counters["bad_data_no_caption"] += missing
        self.shards_seen.update(batch["urls"])
        self.window["images"] += int(batch["images"].shape[0])

    # -- after a step: log, check, save ----------------------------------------------------------
    def _after_step(self, loss: Optional[torch.Tensor], epoch: int) -> None:
        s, cfg = self.s, self.s.cfg
        if loss is not None:
            self.window["loss"] += float(loss)
            self.window["n"] += 1
        due = due_after(s.step, s.plan.total_steps, s.plan.steps_per_epoch, cfg)
        if due.record:
            self._log(epoch, due.progress)
        if due.zeroshot:
            self._zeroshot()
        if due.save:
            self._save()

    def _log(self, epoch: int, progress: bool) -> None:
        s, w = self.s, self.window
        totals = all_reduce_sum(torch.tensor([w["loss"], w["n"], w["images"]], dtype=torch.float64,
                                             device=s.info.device), s.info).tolist()
        elapsed = max(time.perf_counter() - w["t"], 1e-9)
        record = {"step": s.step, "epoch": epoch, "loss": totals[0] / totals[1] if totals[1] else float("nan"),
                  "lr": s.optimizer.param_groups[0]["lr"], "grad_norm": self.grad_norm,
                  "samples_per_s": totals[2] / elapsed, **{k: int(v) for k, v in self.counters.items()}}
        self.metrics.log(record)
        if progress and s.info.is_main:
            log.info(progress_line(record, s.plan.total_steps))
        self.bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{record['samples_per_s']:.0f}")
        self.window = {"loss": 0.0, "n": 0, "images": 0, "t": time.perf_counter()}

    def _zeroshot(self) -> None:
        """The zero-shot check (rank 0); degenerate embeddings stop the run on every rank."""
        error: Optional[DegenerateEmbeddingError] = None
        if self.zeroshot is not None:
            try:
                result = self.zeroshot.run(self.s.student, self.s.info.device,
                                           f"the zero-shot check at step {self.s.step}")
            except DegenerateEmbeddingError as exc:
                error = exc
            else:
                self.metrics.log({"step": self.s.step, **result})
                log.info("step %d: zero-shot top-1 %.4f on %d images", self.s.step, result["zeroshot_top1"],
                         int(result["zeroshot_n"]))
            self.s.student.train()
        if self.s.info.distributed and any_rank(error is not None, self.s.info) and error is None:
            error = DegenerateEmbeddingError(f"stopping at step {self.s.step}: rank 0's zero-shot check found "
                                             "degenerate image embeddings")
        if error is not None:
            raise error
        barrier(self.s.info)

    def _require_usable_data(self) -> None:
        """Stop (writing no checkpoint) when no step of this session trained on a single sample."""
        if self.used_images == 0:
            raise RuntimeError(f"no usable training sample in {self.s.step} step(s) ({self._skip_counts()}); "
                               f"nothing saved: check --train-data {self.s.cfg.train_data}")

    def _save(self) -> None:
        self._require_usable_data()
        s = self.s
        if s.info.is_main:
            state = {"optimizer": s.optimizer.state_dict(),
                     "scaler": s.scaler.state_dict() if s.scaler is not None else None,
                     "schedule": {"name": s.cfg.lr_scheduler, "step": s.step, "total": s.plan.total_steps},
                     "step": s.step, "epoch": s.step // s.plan.steps_per_epoch, "counters": dict(self.counters),
                     "rng": rng_states(), "plan": dataclasses.asdict(s.plan)}
            self.last_checkpoint = save_checkpoint(
                s.cfg.output, s.step, lambda d: save(s.student, d), state,
                dumps_strict(s.cfg.to_dict(), "train config", indent=2, sort_keys=True), s.cfg.keep_checkpoints)
            if s.text_cache is not None:
                s.text_cache.flush(f"s{s.step:08d}")
        self.saved_step = s.step
        barrier(s.info)

    def _summary(self) -> Dict[str, Any]:
        s = self.s
        mine = {"rank": s.info.rank, "steps": s.step, "fingerprint": model_digest(s.student.visual),
                "shards": sorted(self.shards_seen), "counters": dict(self.counters)}
        ranks = all_gather(mine)
        summary = {"rank": s.info.rank, "steps": s.step, "plan": dataclasses.asdict(s.plan),
                   "checkpoint": str(Path(s.cfg.output) / "checkpoints" / "latest"), "ranks": ranks}
        if s.info.is_main:
            (Path(s.cfg.output) / SUMMARY).write_text(dumps_strict(summary, SUMMARY, indent=2))
        return summary


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Run a distillation described by ``cfg`` (single process, or this torchrun rank).

    Returns:
        the run summary (also written to ``OUTPUT/summary.json``): steps, plan, per-rank step
        counts, weight fingerprints, shards read and skip counters.
    """
    check_run_folder(cfg)  # before any work: never a fresh start over an earlier run
    check_reporters(cfg.reporters)  # a missing wandb / tensorboard: one line now, not after the models are built
    info = init_distributed(cfg.device)
    try:
        session = build_session(cfg, info)
        if cfg.overwrite and info.is_main:
            clear_run(cfg.output)
        barrier(info)
        with run_log_file(cfg.output, info.is_main):
            return Trainer(session).run()
    finally:
        cleanup_distributed()
