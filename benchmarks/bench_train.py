"""Distillation training throughput of the B-cosified tower beside the teacher's forward cost.

In one run, on the same device, batch and precision, this measures images/s of

* ``teacher_forward``: the frozen teacher image tower, forward only (no grad; bf16 on GPU), what every
  distillation step pays for its targets;
* ``plain_step``: one training step of the *original* (non-B-cos) image tower: teacher targets, forward,
  backward, adaptive gradient clipping, Adam (the cost of distilling without B-cos);
* ``bcos_step``: the same step for the B-cosified tower (``bcos_clip.train.task.DistillTask``, the
  code the trainer runs);
* ``data``: the training stream (tar read, JPEG decode, RandomResizedCrop + flip) over synthetic
  img2dataset shards with ``--workers`` workers, no model;

and prints the ratios ``bcos_step / teacher_forward`` and ``bcos_step / plain_step``.

    python benchmarks/bench_train.py --quick                               # tiny RN + ViT, CPU, ~a minute
    python benchmarks/bench_train.py --models RN50 ViT-B-16 --batch-size 64 --precision amp_bf16  # GPU
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import torch

from bcos_clip.apps.bench.shards import write_caption_shards
from bcos_clip.apps.bench.timing import measure, timed_once
from bcos_clip.apps.bench.towers import QUICK_OVERRIDES

TINY = {"tiny-RN": "RN50", "tiny-ViT": "ViT-B-16"}  # bcos-clip bench --quick's tiny configs of these


def rate(fn: Callable[[], None], images: int, device: torch.device, warmup: int, iters: int) -> float:
    """Images per second of ``fn`` (one batch of ``images``) after ``warmup`` calls."""
    return images * 1000.0 / measure(fn, device, iters, warmup)["ms"]


def build(name: str, device: torch.device, precision_name: str):
    from bcos_clip.models import PlainCLIP, bcosify, load_clip
    from bcos_clip.train.losses import LossParams
    from bcos_clip.runtime.precision import resolve_precision
    from bcos_clip.train.task import DistillTask, prepare_devices

    base = TINY.get(name, name)
    clip, _, tokenizer = load_clip(base, **(QUICK_OVERRIDES[base] if name in TINY else {}))
    teacher = PlainCLIP.from_clip(clip, tokenizer).eval().requires_grad_(False)
    student = bcosify(clip).train()
    precision = resolve_precision(precision_name, device)
    channels_last = device.type == "cuda"
    prepare_devices(teacher, student, device, precision, channels_last)
    bcos_task = DistillTask(teacher, student, student.visual, "cosine", LossParams(), precision, None, channels_last)
    plain_visual = copy.deepcopy(clip.visual).to(device, precision.weight_dtype).train().requires_grad_(True)
    if channels_last:
        plain_visual.to(memory_format=torch.channels_last)
    return teacher, student, bcos_task, plain_visual, precision


def step_fn(task, visual_params: List[torch.nn.Parameter], images: torch.Tensor, forward=None):
    """One optimiser step as the trainer takes it (AGC 0.01 + Adam)."""
    from bcos_clip.train.losses import LOSSES
    from bcos_clip.train.optim import clip_gradients_

    opt = torch.optim.Adam(visual_params, lr=1e-5)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        if forward is None:
            loss = task.loss(images, None, None)
        else:
            with task.precision.autocast():
                student = forward(images)
            loss = LOSSES["cosine"](student.float(), task.teacher_embed(images))
        loss.backward()
        clip_gradients_(visual_params, 0.01, 1e-3, None)
        opt.step()
    return run


def bench_model(name: str, args, device: torch.device) -> Dict[str, float]:
    teacher, student, task, plain_visual, precision = build(name, device, args.precision)
    size = student.image_size
    images = torch.rand(args.batch_size, 3, size, size, device=device)
    mean, std = teacher.mean.to(device), teacher.std.to(device)

    def plain_forward(x: torch.Tensor) -> torch.Tensor:
        x = ((x - mean) / std).to(precision.weight_dtype)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return plain_visual(x)

    n, w, it = args.batch_size, args.warmup, args.iters
    fns = {"teacher_forward": lambda: task.teacher_embed(images),
           "plain_step": step_fn(task, list(plain_visual.parameters()), images, plain_forward),
           "bcos_step": step_fn(task, list(student.visual.parameters()), images)}
    out: Dict[str, float] = {"image_size": size}
    for _ in range(args.repeats):  # interleaved rounds, best of each: robust to a busy machine
        for key, fn in fns.items():
            out[key] = max(out.get(key, 0.0), rate(fn, n, device, w, it))
    out["bcos_step/teacher_forward"] = out["bcos_step"] / out["teacher_forward"]
    out["bcos_step/plain_step"] = out["bcos_step"] / out["plain_step"]
    return out


def bench_data(args, crop: int) -> float:
    from bcos_clip.data.stream.sources import expand_train_spec
    from bcos_clip.data.stream.loader import StreamSpec, make_epoch_loader
    from bcos_clip.data.stream.transforms import CropSpec

    with tempfile.TemporaryDirectory() as tmp:
        per_shard = 128
        spec = write_caption_shards(Path(tmp), -(-args.data_images // per_shard), per_shard, args.data_image_size,
                                    smooth=False, stats=True)
        shardset = expand_train_spec(spec)
        batches = args.data_images // args.batch_size
        stream = StreamSpec(args.batch_size, CropSpec(crop), seed=0, shuffle_buffer=256)
        seen = []
        seconds = timed_once(lambda: seen.append(sum(int(b["images"].shape[0]) for b in make_epoch_loader(
            shardset, stream, 0, batches, 0, args.workers))), torch.device("cpu"))
        return seen[0] / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny RN + ViT on CPU, small batch")
    p.add_argument("--models", nargs="+", default=["RN50", "ViT-B-16"], help="open_clip names (or tiny-RN, tiny-ViT)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="amp_bf16", choices=["fp32", "amp", "amp_bf16", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best round counts")
    p.add_argument("--workers", type=int, default=4, help="data workers for the data measurement")
    p.add_argument("--data-images", type=int, default=1024, help="synthetic images for the data measurement (0: skip)")
    p.add_argument("--data-image-size", type=int, default=256)
    p.add_argument("--output", "--out", help="also write the results as JSON here")
    args = p.parse_args()
    if args.quick:
        args.models, args.batch_size, args.device = ["tiny-RN", "tiny-ViT"], 8, "cpu"
        args.precision, args.warmup, args.iters, args.repeats = "fp32", 1, 3, 2
        args.workers, args.data_images, args.data_image_size = 1, 64, 96
    device = torch.device(args.device)
    results: Dict[str, Dict[str, float]] = {}
    for name in args.models:
        results[name] = bench_model(name, args, device)
        if args.data_images:
            results[name]["data"] = bench_data(args, results[name]["image_size"])
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "precision": args.precision, "workers": args.workers}
    print(json.dumps(env))
    print(f"{'model':10s} {'teacher fwd':>12s} {'plain step':>11s} {'bcos step':>10s} {'data':>8s} "
          f"{'bcos/teacher':>13s} {'bcos/plain':>11s}   (images/s)")
    for name, r in results.items():
        print(f"{name:10s} {r['teacher_forward']:12.1f} {r['plain_step']:11.1f} {r['bcos_step']:10.1f} "
              f"{r.get('data', float('nan')):8.1f} {r['bcos_step/teacher_forward']:13.3f} {r['bcos_step/plain_step']:11.3f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"env": env, "results": results}, indent=2))


if __name__ == "__main__":
    main()
