"""The training part of the GPU check: `bcos-clip train` for a few steps per precision on synthetic shards.

For each precision (default: amp_bf16, then amp = float16 autocast + GradScaler) one `bcos-clip train`
process runs --steps optimiser steps of the default distillation (text_kd, Adam, AGC) of a random-weight
RN50 at 224 px on img2dataset-like shards written first (JPEG + caption). Recorded per run: exit code,
wall time, the losses logged (all finite?), images/s of the last log line, the GradScaler's skipped
(overflow) steps, and whether the final checkpoint was written. `--quick`: a tiny RN tower on the CPU.

    python benchmarks/gpu_train_check.py --output /tmp/train_check.json [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from bcos_clip.apps.bench.shards import write_caption_shards

ROOT = Path(__file__).resolve().parents[1]


def metrics(run_dir: Path) -> List[Dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one_run(precision: str, args: argparse.Namespace, spec: str, work: Path) -> Dict[str, Any]:
    out = work / f"train_{precision}"
    model = str(ROOT / "configs" / "tiny_rn.json") if args.quick else "RN50"
    cmd = [sys.executable, "-m", "bcos_clip.cli", "train", "--model", model, "--train-data", spec,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--precision", precision,
           "--device", args.device, "--workers", str(args.workers), "--log-every", "5", "--save-every", "100000",
           "--output", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired as exc:
        rc, tail = "timeout", str(exc)[-500:]
    rows = metrics(out)
    losses = [r["loss"] for r in rows if "loss" in r]
    last = rows[-1] if rows else {}
    return {"precision": precision, "rc": rc, "wall_s": time.perf_counter() - t0, "steps": last.get("step"),
            "losses": losses, "losses_finite": bool(losses) and all(math.isfinite(v) for v in losses),
            "samples_per_s": last.get("samples_per_s"), "amp_overflow_steps": last.get("amp_overflow_steps", 0),
            "checkpoint": (out / "checkpoints" / "latest").exists(), "ok": rc == 0 and bool(losses),
            "log_tail": tail if rc != 0 else ""}


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny tower on the CPU (dry run)")
    p.add_argument("--device", default=None, help="default: cuda, or cpu with --quick")
    p.add_argument("--precisions", default="amp_bf16,amp")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (8 with --quick)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--timeout", type=float, default=150.0, help="seconds per training run")
    p.add_argument("--output", "--out", dest="output", default=None, help="JSON file to write")
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.quick else "cuda")
    args.batch_size = args.batch_size or (8 if args.quick else 64)
    with tempfile.TemporaryDirectory(prefix="bcos_train_check_") as tmp:
        work = Path(tmp)
        n_shards = max(args.workers, 1)
        per_shard = (args.steps + 2) * args.batch_size // n_shards + args.batch_size
        spec = write_caption_shards(work / "shards", n_shards, per_shard, 72 if args.quick else 256)
        runs = [one_run(prec.strip(), args, spec, work) for prec in args.precisions.split(",") if prec.strip()]
    result = {"device": args.device, "steps": args.steps, "batch_size": args.batch_size,
              "model": "tiny_rn" if args.quick else "RN50", "runs": runs, "ok": all(r["ok"] for r in runs)}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
    for r in runs:
        print(json.dumps({k: v for k, v in r.items() if k != "log_tail"}), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
