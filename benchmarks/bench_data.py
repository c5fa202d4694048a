"""Data path only: images/s of the training stream (tar read, JPEG decode, RandomResizedCrop + flip).

The model is switched off: this is the rate at which DataLoader workers can feed any GPU, per worker
count and source image size, measured on synthetic img2dataset-like shards (smooth random JPEGs +
captions, written by ``bcos_clip.apps.bench.shards.write_caption_shards``). With the model switched on,
see the ``e2e`` rows of ``bcos-clip bench`` (GPU).

    python benchmarks/bench_data.py                           # workers 0,1,2; sources 256 and 384 px
    python benchmarks/bench_data.py --workers 0 4 8 16 --output data.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from bcos_clip.apps.bench.shards import write_caption_shards
from bcos_clip.apps.bench.timing import timed_once
from bcos_clip.data.stream.loader import StreamSpec, make_epoch_loader
from bcos_clip.data.stream.sources import expand_train_spec
from bcos_clip.data.stream.transforms import CropSpec


def rate(spec: str, crop: int, batch: int, batches: int, workers: int) -> float:
    """Images/s over ``batches`` batches after two untimed ones (worker start-up)."""
    stream = StreamSpec(batch_size=batch, crop=CropSpec(size=crop), shuffle_buffer=256)
    it = iter(make_epoch_loader(expand_train_spec(spec), stream, 0, batches + 2, 0, workers))
    next(it), next(it)
    seen = []
    seconds = timed_once(lambda: seen.append(sum(int(next(it)["images"].shape[0]) for _ in range(batches))),
                         torch.device("cpu"))
    return seen[0] / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sources", type=int, nargs="+", default=[256, 384], help="source image sides (px)")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--output", "--out", help="also write the rows as JSON here")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in a.sources:
            shards = max(max(a.workers), 1)
            spec = write_caption_shards(Path(tmp) / str(side), shards,
                                        (a.batches + 3) * a.batch_size // shards + a.batch_size, side)
            for w in a.workers:
                r = rate(spec, a.crop, a.batch_size, a.batches, w)
                rows.append({"source_px": side, "crop_px": a.crop, "workers": w, "img_per_s": round(r, 1)})
                print(f"source {side} px -> crop {a.crop}: {w} workers {r:8.1f} img/s", flush=True)
    out = {"cpus": os.cpu_count(), "rows": rows}
    if a.output:
        Path(a.output).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
