"""Zero-shot evaluation throughput against a pure forward of the same model on the same batches.

Writes a synthetic CLIP_benchmark ``wds`` folder (random-noise images, ``.webp`` + ``.cls``), then in
one run measures

* ``pipeline``: ``bcos_clip.evaluation.zeroshot.zeroshot_classification`` (tar reading, image decoding,
  preprocessing, DataLoader, forward, gather, metrics; the classifier comes from a warm cache), and
* ``forward``: ``model.encode_image`` alone over the same batches, already decoded, preprocessed and on
  the device,

and prints images/s of both and their ratio (pipeline / forward; 1.0 = the data path is free).

    python benchmarks/bench_eval.py --quick                      # tiny RN, CPU, seconds
    python benchmarks/bench_eval.py --model RN50 --bcos --n 2048 --workers 8 --device cuda
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bcos_clip.apps.bench.shards import write_wds_benchmark
from bcos_clip.apps.bench.timing import timed_once
from bcos_clip.runtime.precision import autocast
from bcos_clip.runtime.resources import CONFIGS, resource_file


def build_model(name: str, bcos: bool, device: str):
    from bcos_clip.models import PlainCLIP, bcosify, load_clip

    clip, _, tokenizer = load_clip(name)
    model = bcosify(clip) if bcos else PlainCLIP.from_clip(clip, tokenizer)
    return model.to(device).eval()


@torch.no_grad()
def time_forward(model, batches, device: str, precision: str) -> float:
    with autocast(precision, torch.device(device)):
        model.encode_image(batches[0])  # warm-up

    def forward_all() -> None:
        for x in batches:
            with autocast(precision, torch.device(device)):
                model.encode_image(x)

    return timed_once(forward_all, torch.device(device))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny RN config, 128 images, CPU")
    ap.add_argument("--model", default="RN50", help="open_clip name or JSON config (random weights)")
    ap.add_argument("--bcos", action="store_true", help="benchmark the B-cosified model")
    ap.add_argument("--n", type=int, default=1024, help="images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="amp", choices=["fp32", "amp", "amp_bf16"])
    ap.add_argument("--output", "--out", default=None, help="optional JSON file for the numbers")
    args = ap.parse_args()
    if args.quick:
        args.model = str(resource_file(CONFIGS, "tiny_rn.json"))
        args.n, args.batch_size, args.workers, args.device = 128, 32, 1, "cpu"

    from bcos_clip.data.readers.registry import open_dataset
    from bcos_clip.evaluation.features import LoaderSettings, make_loader
    from bcos_clip.evaluation.zeroshot import zeroshot_classification

    model = build_model(args.model, args.bcos, args.device)
    settings = LoaderSettings(args.batch_size, args.workers, args.device, args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        write_wds_benchmark(root, args.n, model.image_size, classes=10)
        ds = open_dataset("wds/bench", str(root))
        cache = Path(tmp) / "cache"
        zeroshot_classification(model, ds, settings, cache)  # warm-up + classifier cache
        outs = []
        t_pipe = timed_once(lambda: outs.append(zeroshot_classification(model, ds, settings, cache)),
                            torch.device(args.device))
        out = outs[0]
        batches = [x.to(args.device) for x, _, _ in make_loader(ds.torch_dataset("test", model.preprocess),
                                                              args.batch_size, args.workers)]
    t_fwd = time_forward(model, batches, args.device, args.precision)
    n = out.n_samples
    res = {"model": args.model, "bcos": args.bcos, "device": args.device,
           "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "precision": args.precision, "n_images": n, "batch_size": args.batch_size, "workers": args.workers,
           "pipeline_img_per_s": n / t_pipe, "forward_img_per_s": n / t_fwd, "ratio_pipeline_over_forward": t_fwd / t_pipe}
    for k, v in res.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
