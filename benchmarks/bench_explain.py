"""Explanation speed: K prompts in one batched pass vs K separate passes, and the cached contribution tensor.

For K = 1, 16, 256 prompts on a batch of N images, times (all in one run, same machine):
  separate  K calls of explain() with one prompt each (what the official code does, one backward each)
  batched   one explain() call: one forward + K Jacobian rows in batched backwards (method="prompts")
  auto      explain(method="auto"): the contribution-tensor (basis) path when K > D
and for a new set of 16 prompts on the same images:
  build     image_contributions(): D Jacobian rows once (a server does this once per image)
  cached    ImageContributions.explain(16 new prompts): one einsum
  fresh     explain() of the same 16 prompts from scratch
Ratios are printed as separate / batched etc. Durations are medians over at least --repeats runs (short
calls: until 2 s were spent), each measurement after an untimed warm-up call.

    python benchmarks/bench_explain.py --quick                  # CPU, tiny RN (64 px), N = 2
    python benchmarks/bench_explain.py --device cuda            # RN50 at 224 px, N = 8, random weights
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bcos_clip.apps.bench.timing import median_time  # noqa: E402
from bcos_clip.apps.bench.towers import QUICK_OVERRIDES, rescale_random_weights_  # noqa: E402

def build_model(quick: bool, device: torch.device):
    """A B-cos RN with random weights (timing does not depend on them), rescaled so that the B = 2 tower
    does not output 0 (``rescale_random_weights_``)."""
    import bcos_clip

    clip, _, _ = bcos_clip.load_clip("RN50", **(QUICK_OVERRIDES["RN50"] if quick else {}))
    return bcos_clip.bcosify(rescale_random_weights_(clip), b=2.0).to(device).eval()


def check_model(model, images: torch.Tensor) -> None:
    with torch.no_grad():
        norm = model.encode_image(images).float().norm(dim=-1)
    if not torch.isfinite(norm).all() or (norm == 0).any():
        raise RuntimeError(f"benchmark model gives degenerate embeddings (norms {norm.tolist()})")


def bench_prompts(model, images, ks: List[int], repeats: int, max_separate: int) -> List[Dict[str, float]]:
    from bcos_clip.explain import explain

    device, d = images.device, model.embed_dim
    rows = []
    for k in ks:
        text = F.normalize(torch.randn(k, d, device=device), dim=-1)
        n_sep = min(k, max_separate)
        one = lambda: explain(model, images, text[:1], method="prompts")  # noqa: E731
        sep = median_time(lambda: [explain(model, images, text[i:i + 1], method="prompts") for i in range(n_sep)],
                    device, repeats, warmup=one) * k / n_sep
        batched = median_time(lambda: explain(model, images, text, method="prompts"), device, repeats)
        auto = median_time(lambda: explain(model, images, text, method="auto"), device, repeats)
        rows.append({"K": k, "separate_s": sep, "separate_extrapolated_from": n_sep, "batched_s": batched,
                     "auto_s": auto, "auto_path": "basis" if k > d else "prompts",
                     "separate_over_batched": sep / batched, "separate_over_auto": sep / auto})
    return rows


def bench_cache(model, images, repeats: int) -> Dict[str, float]:
    from bcos_clip.explain import explain, image_contributions

    device = images.device
    text = F.normalize(torch.randn(16, model.embed_dim, device=device), dim=-1)
    build = median_time(lambda: image_contributions(model, images), device, repeats)
    cache = image_contributions(model, images)
    cached = median_time(lambda: cache.explain(text), device, repeats)
    fresh = median_time(lambda: explain(model, images, text, method="prompts"), device, repeats)
    err = float((cache.explain(text).contributions - explain(model, images, text).contributions).abs().max())
    return {"build_s": build, "cached_16_s": cached, "fresh_16_s": fresh, "fresh_over_cached": fresh / cached,
            "max_abs_diff": err, "cache_MiB": cache.nbytes / 2 ** 20}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny RN at 64 px on the CPU (CI-sized)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available and not --quick)")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 2 quick, 8 otherwise)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 16, 256], help="prompt counts")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--max-separate", type=int, default=256,
                   help="time at most this many separate passes and scale linearly (marked in the output)")
    p.add_argument("--output", "--out", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.quick else "cpu"))
    torch.manual_seed(0)
    model = build_model(args.quick, device)
    n = args.batch or (2 if args.quick else 8)
    images = torch.rand(n, 3, model.image_size, model.image_size, device=device)
    from bcos_clip.explain import explain

    check_model(model, images)
    explain(model, images, torch.randn(4, model.embed_dim, device=device))  # warm-up (vmap, kernels)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; model {'tiny RN 64 px' if args.quick else 'RN50 224 px'} (D = {model.embed_dim}); "
          f"N = {n} images; medians of >= {args.repeats} runs")
    rows = bench_prompts(model, images, args.ks, args.repeats, args.max_separate)
    print(f"{'K':>5} {'separate s':>11} {'batched s':>10} {'auto s':>8} {'auto path':>9} "
          f"{'sep/batched':>11} {'sep/auto':>9}")
    for r in rows:
        mark = "" if r["separate_extrapolated_from"] == r["K"] else f"  (separate scaled from {r['separate_extrapolated_from']})"
        print(f"{r['K']:>5} {r['separate_s']:>11.3f} {r['batched_s']:>10.3f} {r['auto_s']:>8.3f} "
              f"{r['auto_path']:>9} {r['separate_over_batched']:>10.2f}x {r['separate_over_auto']:>8.2f}x{mark}")
    cache = bench_cache(model, images, args.repeats)
    print(f"contribution tensor: build {cache['build_s']:.3f} s ({cache['cache_MiB']:.1f} MiB); 16 new prompts: "
          f"cached {cache['cached_16_s'] * 1e3:.2f} ms vs fresh {cache['fresh_16_s']:.3f} s "
          f"= {cache['fresh_over_cached']:.0f}x (max |diff| {cache['max_abs_diff']:.1e})")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"device": name, "quick": args.quick, "batch": n, "prompts": rows, "cache": cache}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
