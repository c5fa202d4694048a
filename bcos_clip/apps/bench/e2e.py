"""End-to-end distillation rows of `bcos-clip bench`: data + teacher + student on webdataset shards.

Three numbers of the same step (the training library's DistillTask with the `cosine` loss, Adam):
- data only: batches/s of the training stream (decode + RandomResizedCrop + flip in DataLoader
  workers), the model switched off;
- compute only: teacher forward + student step on a batch already on the device;
- end to end: the stream feeding the step, as the training loop does.
Synthetic JPEG shards (img2dataset-like: `.jpg` + `.txt`) are written to a scratch folder first.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, List

import torch

from bcos_clip.apps.bench.shards import write_caption_shards
from bcos_clip.apps.bench.timing import Row, throughput, timed_once
from bcos_clip.apps.bench.towers import ModelSet
from bcos_clip.data.stream.loader import StreamSpec, make_epoch_loader
from bcos_clip.data.stream.sources import expand_train_spec
from bcos_clip.data.stream.transforms import CropSpec, to_unit_float
from bcos_clip.models import PlainCLIP
from bcos_clip.runtime.precision import resolve_precision, teacher_dtype
from bcos_clip.train.losses import LossParams
from bcos_clip.train.task import DistillTask

log = logging.getLogger(__name__)


def _imgs_per_s(run: Callable[[], int], device: torch.device) -> float:
    """Images per second of ``run()``, which returns how many images it handled."""
    n: List[int] = []
    seconds = timed_once(lambda: n.append(run()), device)
    return n[0] / seconds


def _distill_step(ms: ModelSet) -> Callable[[torch.Tensor], None]:
    """One training step as the trainer takes it: frozen teacher targets, student forward + backward, Adam."""
    cuda = ms.device.type == "cuda"
    teacher = PlainCLIP.from_clip(copy.deepcopy(ms.clip).to(teacher_dtype(ms.device)), ms.tokenizer)
    teacher.to(ms.device).eval().requires_grad_(False)  # PlainCLIP's mean/std buffers start on the CPU
    precision = resolve_precision("amp_bf16" if cuda else "fp32", ms.device)
    visual = ms.compiled.get("bcos-fast", ms.bcos.visual)
    task = DistillTask(teacher, ms.bcos, visual, "cosine", LossParams(), precision, None,
                       channels_last=ms.channels_last)
    ms.bcos.visual.train()
    opt = torch.optim.Adam(ms.bcos.visual.parameters(), lr=1e-6)

    def step(images: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        task.loss(images, None, None).backward()
        opt.step()

    return step


def e2e_rows(ms: ModelSet, batch: int, steps: int, workers: int, workdir: Path) -> List[Row]:
    """Data-only, compute-only and end-to-end img/s of the distillation step (same run)."""
    base: Row = {"section": "e2e", "model": ms.name, "batch": batch, "workers": workers}
    spec = write_caption_shards(workdir / "shards", max(workers, 1), (steps + 3) * batch // max(workers, 1) + batch,
                                ms.image_size + ms.image_size // 7)
    shardset = expand_train_spec(spec)
    stream = StreamSpec(batch_size=batch, crop=CropSpec(size=ms.image_size), shuffle_buffer=256)
    cuda = ms.device.type == "cuda"
    step = _distill_step(ms)

    def loader() -> Any:
        it = iter(make_epoch_loader(shardset, stream, 0, steps + 2, 0, workers, pin_memory=cuda))
        next(it), next(it)  # worker start-up and the first batches are not timed
        return it

    def to_device(b: Any) -> torch.Tensor:
        return to_unit_float(b["images"].to(ms.device, non_blocking=True))

    def data_only(it: Any) -> int:
        return sum(int(next(it)["images"].shape[0]) for _ in range(steps))

    def compute_only() -> int:
        for _ in range(steps):
            step(fixed)
        return steps * batch

    def end_to_end(it: Any) -> int:
        for _ in range(steps):
            step(to_device(next(it)))
        return steps * batch

    def streamed(consume: Callable[[Any], int]) -> float:
        it = loader()  # started (and warmed up) outside the timed part
        return _imgs_per_s(lambda: consume(it), ms.device)

    fixed = to_device(next(iter(make_epoch_loader(shardset, stream, 0, 1, 0, 0))))
    for _ in range(2):
        step(fixed)
    data = streamed(data_only)
    compute = _imgs_per_s(compute_only, ms.device)
    e2e = streamed(end_to_end)
    rows = [dict(base, name=f"e2e/{ms.name}/{v}", variant=v, img_per_s=r, ms=batch * 1000.0 / r)
            for v, r in (("data only", data), ("teacher + student step", compute), ("end to end", e2e))]
    rows[-1]["ratio_vs_compute"] = e2e / compute
    rows[-1]["student_compiled"] = "bcos-fast" in ms.compiled
    return [throughput(r, batch) for r in rows]
