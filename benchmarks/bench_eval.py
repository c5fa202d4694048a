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
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_wds(root: Path, n: int, size: int, classes: int, per_shard: int = 256) -> None:
    import webdataset as wds

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(f"class {i}" for i in range(classes)) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na bad photo of a {c}.\n")
    (root / "test").mkdir()
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        with wds.TarWriter(str(root / "test" / f"{s}.tar")) as sink:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                buf = io.BytesIO()
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(buf, format="WEBP", quality=90, method=0)
                sink.write({"__key__": f"{i:07d}", "webp": buf.getvalue(), "cls": str(i % classes)})
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")


def build_model(name: str, bcos: bool, device: str):
    from bcos_clip.models import PlainCLIP, bcosify, load_clip

    clip, _, tokenizer = load_clip(name)
    model = bcosify(clip) if bcos else PlainCLIP.from_clip(clip, tokenizer)
    return model.to(device).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def time_forward(model, batches, device: str, precision: str) -> float:
    from bcos_clip.runtime.precision import autocast

    with autocast(precision, torch.device(device)):
        model.encode_image(batches[0])  # warm-up
    sync(device)
    start = time.perf_counter()
    for x in batches:
        with autocast(precision, torch.device(device)):
            model.encode_image(x)
    sync(device)
    return time.perf_counter() - start


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
        args.model = str(Path(__file__).resolve().parents[1] / "configs" / "tiny_rn.json")
        args.n, args.batch_size, args.workers, args.device = 128, 32, 1, "cpu"

    from bcos_clip.data.readers.registry import open_dataset
    from bcos_clip.evaluation.features import LoaderSettings, make_loader
    from bcos_clip.evaluation.zeroshot import zeroshot_classification

    model = build_model(args.model, args.bcos, args.device)
    settings = LoaderSettings(args.batch_size, args.workers, args.device, args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        write_wds(root, args.n, model.image_size, classes=10)
        ds = open_dataset("wds/bench", str(root))
        cache = Path(tmp) / "cache"
        zeroshot_classification(model, ds, settings, cache)  # warm-up + classifier cache
        sync(args.device)
        start = time.perf_counter()
        out = zeroshot_classification(model, ds, settings, cache)
        sync(args.device)
        t_pipe = time.perf_counter() - start
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
