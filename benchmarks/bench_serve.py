"""Explorer latency: the first prompt on a new image against a further prompt on the same image.

Through the JSON API in-process (FastAPI TestClient, so HTTP parsing, PNG rendering and base64 are
included), in one run:

* ``first``: `POST /explain` with one prompt on an image the server has not seen (decode, image tower,
  text tower, pictures);
* ``further``: `POST /explain` with one new prompt on the same image (cache hit; with the ``tensor``
  strategy the image tower does not run: text tower, einsum, pictures);
* ``first_compute``: the model part of ``first`` (image tower + einsum, server-side timings);
* ``direct``: what a server without any cache pays per query: ``bcos_clip.explain`` (one forward and one
  batched backward for the prompt) on the preprocessed image, without pictures.

for each per-image strategy of the server (``tensor``: the contribution tensor, D Jacobian rows once;
``prompts``: one Jacobian row per new prompt). Prints medians (ms) over the images and the ratios
first / further and direct / further.

    python benchmarks/bench_serve.py                      # the demo's tiny RN (random weights), CPU
    python benchmarks/bench_serve.py --model runs/demo/student --images 8 --prompts 4
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from bcos_clip.apps.bench.timing import timed_once  # noqa: E402
from bcos_clip.apps.bench.towers import rescale_random_weights_  # noqa: E402
from bcos_clip.runtime.resources import CONFIGS, resource_file  # noqa: E402

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow star", "grass", "a dog",
           "two objects", "an object on the left", "a photo", "noise"]


def picture(seed: int, size: int = 256) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((size, size, 3)) * 60 + 120).astype("uint8"))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y, r = rng.integers(20, size - 60), rng.integers(20, size - 60), rng.integers(15, 40)
        draw.ellipse([x, y, x + 2 * r, y + 2 * r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def random_model_dir(arch: str, root: Path) -> str:
    """A B-cosified random-weight model of `arch` (open_clip name or JSON config), saved under root."""
    import bcos_clip

    torch.manual_seed(0)
    clip, _, _ = bcos_clip.load_clip(arch)
    return str(bcos_clip.save(bcos_clip.bcosify(rescale_random_weights_(clip)), root / "student"))


def post(client, data: bytes, prompts: List[str]) -> Dict:
    r = client.post("/explain", files={"image": ("x.png", data, "image/png")}, data={"prompts": prompts})
    r.raise_for_status()
    return r.json()


def timed(fn) -> float:
    """Milliseconds of one call (the server runs on the CPU here)."""
    return 1000.0 * timed_once(fn, torch.device("cpu"))


def run(model_dir: str, n_images: int, n_further: int, device: str, strategy: str) -> Dict:
    import bcos_clip
    from fastapi.testclient import TestClient

    from bcos_clip.apps.serve.server import ServeConfig, build_app

    config = ServeConfig(model=model_dir, device=device, cache_entries=n_images + 1, strategy=strategy)
    app = build_app(config)
    engine_model = bcos_clip.load(model_dir).to(device).eval()
    first, further, direct, towers = [], [], [], []
    with TestClient(app, base_url="http://127.0.0.1") as client:
        post(client, picture(10_000), PROMPTS[:1])  # warm-up (first-call allocations)
        for i in range(n_images):
            data = picture(i)
            body: Dict = {}
            first.append(timed(lambda: body.update(post(client, data, PROMPTS[:1]))))
            assert not body["cache_hit"]
            towers.append(body["timings_ms"]["image_tower"] + body["timings_ms"]["explain"])
            for j in range(1, n_further + 1):
                prompt = PROMPTS[j % len(PROMPTS)]
                further.append(timed(lambda: body.update(post(client, data, [prompt]))))
                assert body["cache_hit"]
            image = engine_model.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None].to(device)
            direct.append(timed(lambda: bcos_clip.explain(engine_model, image, PROMPTS[1:2])))
    med = {k: statistics.median(v) for k, v in
           (("first", first), ("further", further), ("direct", direct), ("first_compute", towers))}
    return {"strategy": strategy, "image_size": engine_model.image_size,
            "embed_dim": engine_model.embed_dim, "images": n_images, "further_per_image": n_further,
            "median_ms": {k: round(v, 2) for k, v in med.items()},
            "first_over_further": round(med["first"] / med["further"], 2),
            "direct_over_further": round(med["direct"] / med["further"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a B-cos checkpoint dir (default: a random model of --arch)")
    p.add_argument("--arch", default=None, help="open_clip name or JSON config of the random model "
                                                "(default: configs/tiny_rn.json, the demo's RN: 64 px, D 64)")
    p.add_argument("--images", type=int, default=6, help="new images")
    p.add_argument("--prompts", type=int, default=4, help="further prompts per image")
    p.add_argument("--device", default="cpu")
    p.add_argument("--strategy", nargs="+", default=["tensor", "prompts"], choices=["tensor", "prompts"],
                   help="per-image strategies to measure (same run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output", "--out", dest="output", default=None, help="write the result JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        arch = args.arch or str(resource_file(CONFIGS, "tiny_rn.json"))
        model_dir = args.model or random_model_dir(arch, Path(tmp))
        runs = [run(model_dir, args.images, args.prompts, args.device, s) for s in args.strategy]
    result = {"model": args.model or f"random weights, architecture {arch}",
              "device": args.device, "torch_threads": torch.get_num_threads(), "runs": runs}
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
