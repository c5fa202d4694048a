"""Integrated Gradients: several path points per model call (the default) vs one point per call.

The pointing game explains a batch of grids for their cells' prompts with Integrated Gradients
(32 Gauss-Legendre points); one small model call per point leaves a CPU mostly idle between calls.
This times both paths on the same images and prompts (medians, one run, same machine) and prints the
largest difference of the maps relative to their largest entry.

    python benchmarks/bench_ig.py --teacher /tmp/demo/teacher/teacher_rn.json /tmp/demo/teacher/teacher_rn.pt
    python benchmarks/bench_ig.py                # the tiny random RN and ViT of the quick benchmarks
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bcos_clip  # noqa: E402
from bcos_clip.apps.bench.timing import median_time  # noqa: E402
from bcos_clip.apps.bench.towers import QUICK_OVERRIDES  # noqa: E402
from bcos_clip.explain.baselines import integrated_gradients  # noqa: E402
from bcos_clip.models.plain import PlainCLIP  # noqa: E402


def models(teachers: List[List[str]]) -> Dict[str, PlainCLIP]:
    """name -> plain CLIP: the given (config, weights) pairs, else tiny random RN50 / ViT-B-16 configs."""
    if teachers:
        out = {}
        for config, weights in teachers:
            clip, _, tok = bcos_clip.load_clip(config, pretrained=weights)
            out[os.path.basename(weights)] = PlainCLIP.from_clip(clip, tok)
        return out
    out = {}
    for name in ("RN50", "ViT-B-16"):
        clip, _, tok = bcos_clip.load_clip(name, **QUICK_OVERRIDES[name])
        out[name] = PlainCLIP.from_clip(clip, tok)
    return out


def bench(model: PlainCLIP, n: int, k: int, steps: int, repeats: int) -> Dict[str, float]:
    g = torch.Generator().manual_seed(0)
    size = int(model.image_size)
    x = torch.rand(n, 3, size, size, generator=g)
    text = F.normalize(torch.randn(n, k, model.embed_dim, generator=g), dim=-1)
    batched = integrated_gradients(model, x, text, steps=steps)
    single = integrated_gradients(model, x, text, steps=steps, pass_images=n)
    diff = float((batched - single).abs().max() / single.abs().max())
    cpu = torch.device("cpu")
    t_batched = median_time(lambda: integrated_gradients(model, x, text, steps=steps), cpu, repeats)
    t_single = median_time(lambda: integrated_gradients(model, x, text, steps=steps, pass_images=n), cpu, repeats)
    return {"images": n, "prompts": k, "steps": steps, "size": size, "one_point_per_call_s": t_single,
            "batched_s": t_batched, "speedup": t_single / t_batched, "max_rel_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", nargs=2, action="append", default=[], metavar=("CONFIG", "WEIGHTS"))
    ap.add_argument("--images", type=int, default=4, help="grids per call (the pointing game's batch)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per image (the cells of a 2 x 2 grid)")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name, model in models(args.teacher).items():
        row = {"model": name, "threads": torch.get_num_threads(), **bench(model.eval(), args.images, args.prompts,
                                                                          args.steps, args.repeats)}
        rows.append(row)
        print(json.dumps(row))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
