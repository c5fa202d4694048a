"""Sweep the demo's tiny ViT teacher: train variants on one cached shapes world, score them zero-shot.

Each variant is a call of ``bcos_clip.apps.demo.teacher`` (the demo's own teacher code) with other
steps / learning rate / warm-up / ``vision_cfg`` keys, evaluated on the demo suite's zero-shot tasks
(``bcos_clip.apps.demo.evaluate``). One JSON line per variant goes to ``<out>/teacher_sweep.jsonl``: its
settings, zero-shot top-1 per task, and the training's CPU seconds (user + system, this process).

    python benchmarks/sweep_vit_teacher.py --world /tmp/w0/world --out /tmp/sweep --name p8_w96 \\
        --steps 1000 --lr 1e-3 --vision '{"patch_size": 8}' --threads 1

The world comes from ``bcos_clip.data.shapes.writer.build_world`` (``--build`` builds it if missing,
full demo size). Run it under ``nice``; CPU seconds hardly change with other load, wall time does.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from bcos_clip.apps.demo.config import DemoConfig
from bcos_clip.apps.demo.evaluate import DemoModel, evaluate_model, suite_for
from bcos_clip.apps.demo.settings import load_settings
from bcos_clip.apps.demo.stages import StageRunner
from bcos_clip.runtime.hashing import file_digest
from bcos_clip.data.shapes.writer import build_world
from bcos_clip.apps.demo.teacher import pretrain_teacher

ZERO_SHOT = "zeroshot_classification"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, help="a built shapes world folder (its world.json)")
    ap.add_argument("--build", action="store_true", help="build the world (full demo size) if missing")
    ap.add_argument("--seed", type=int, default=0, help="world seed (with --build) and teacher seed")
    ap.add_argument("--out", required=True, help="sweep folder: one sub-folder per variant + the JSONL")
    ap.add_argument("--name", required=True)
    ap.add_argument("--arch", default="vit")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--weight-decay", type=float, default=None)
    ap.add_argument("--vision", default="{}", help="JSON dict merged over the arch's vision_cfg")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    world = build_world(args.world, seed=args.seed) if args.build else _existing(args.world)
    vision = json.loads(args.vision)
    folder = Path(args.out) / args.name
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ckpt = pretrain_teacher(world, folder, arch=args.arch, steps=args.steps, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, warmup=args.warmup, weight_decay=args.weight_decay,
                            vision=vision)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    meta = json.loads(ckpt.with_suffix(".json").read_text())["teacher"]
    teacher = DemoModel("teacher", str(ckpt.with_suffix(".json")), str(ckpt), file_digest(ckpt), "teacher")
    res = evaluate_model(StageRunner(folder), folder / "eval", teacher, world, suite_for("demo", [ZERO_SHOT]),
                         load_settings(DemoConfig(arch=args.arch)).eval, "cpu")
    acc = {ds: round(row["metrics"]["acc1"], 4) for ds, row in res[ZERO_SHOT].items()}
    row = {"name": args.name, "seed": args.seed, "world": str(world.root), "config": meta["key"]["config"],
           "vision": vision, "acc1": acc, "final_loss": round(meta["final_loss"], 4),
           "train_s_logged": meta["train_seconds"], "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
           "threads": args.threads}
    with open(Path(args.out) / "teacher_sweep.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def _existing(folder: str):
    info = json.loads((Path(folder) / "world.json").read_text())
    return build_world(folder, **{k: info["args"][k] for k in ("seed", "image_size", "n_train", "n_eval_per_class",
                                                             "samples_per_shard", "eval_shard_size",
                                                             "n_retrieval")})


if __name__ == "__main__":
    main()
