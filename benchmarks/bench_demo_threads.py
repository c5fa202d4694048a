"""How many torch threads should the demo use? A fixed piece of demo work timed at each thread count,
on an idle machine and with one core kept busy by another process.

The work: the quick demo's main distillation (``configs/demo.yaml`` quick settings: text_kd, batch 128,
one data worker) for ``--steps`` steps (default 20), on the quick demo's world and teacher (built once
into ``--demo``, or taken from an existing demo folder). Each run is a fresh process (its own OpenMP
pool) that sets ``torch.set_num_threads(T)`` and times ``bcos_clip.train.train``; with ``--busy`` a spin
loop (``python -c 'while True: pass'``, started and stopped by this script) keeps one core busy for the
whole run; with more than one thread, each OpenMP wait policy of ``--waits`` (PASSIVE, as the CLI sets
it, and the runtime's default, spinning). Conditions are interleaved and repeated; the table shows the
median of the repeats: wall
seconds of the whole ``train`` call (setup + steps) and seconds per step of the last logged window. Each
run also records how busy the cores were just before it started (``/proc/stat``, 1 s), since on a shared
machine "idle" is never quite idle.

Usage::

    nice -n 10 python benchmarks/bench_demo_threads.py --demo /tmp/demo_quick --out threads.json

Measured on the project's 2-core VM shared with other developers (``--steps 20 --repeats 1``, run twice,
2026-12-01; its cores were ~2.0 busy before every run): the table and the conclusion are in
``bcos_clip/runtime/threads.py``, the rule every command follows (torch's default thread count, OpenMP
threads waiting passively).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

SPIN = "while True: pass"


def busy_cores(window: float = 1.0) -> float:
    """Cores busy (any process) over ``window`` seconds, from /proc/stat (Linux)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)

    i0, a0 = sample()
    time.sleep(window)
    i1, a1 = sample()
    return round((1.0 - (i1 - i0) / max(a1 - a0, 1e-9)) * (os.cpu_count() or 1), 2)


def prepare(demo: Path) -> None:
    """The quick demo's world and teacher in ``demo`` (reused when already there)."""
    from bcos_clip.apps.demo.config import DemoConfig
    from bcos_clip.apps.demo.settings import load_settings
    from bcos_clip.apps.demo.training import teacher_paths
    from bcos_clip.data.shapes.writer import build_world

    settings = load_settings(DemoConfig(quick=True))
    w = settings.world
    world = build_world(demo / "world", quick=True, seed=0, n_train=w.n_train,
                        n_eval_per_class=w.n_eval_per_class, image_size=w.image_size)
    teacher_paths(world, demo / "teacher", "rn", settings.teacher, 0, True)


def child(demo: Path, threads: int, steps: int) -> Dict[str, Any]:
    """One timed distillation in this process (``--child``)."""
    import torch

    from bcos_clip.apps.demo.config import DemoConfig
    from bcos_clip.apps.demo.settings import load_settings
    from bcos_clip.apps.demo.training import distill_config, teacher_paths
    from bcos_clip.data.shapes.writer import build_world
    from bcos_clip.runtime.runfiles import read_metrics
    from bcos_clip.train import train

    torch.set_num_threads(threads)
    settings = load_settings(DemoConfig(quick=True))
    w = settings.world
    world = build_world(demo / "world", quick=True, seed=0, n_train=w.n_train,
                        n_eval_per_class=w.n_eval_per_class, image_size=w.image_size)
    teacher = teacher_paths(world, demo / "teacher", "rn", settings.teacher, 0, True)
    with tempfile.TemporaryDirectory() as out:
        cfg = distill_config(world, teacher, Path(out) / "student", settings, 0, "cpu", steps=steps)
        t0, c0 = time.perf_counter(), time.process_time()
        train(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        last = [r for r in read_metrics(Path(out) / "student") if "samples_per_s" in r][-1]
    return {"threads": torch.get_num_threads(), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "step_s": round(cfg.batch_size / last["samples_per_s"], 3)}


def run_one(demo: Path, threads: int, wait: str, steps: int, busy: bool, timeout: float) -> Dict[str, Any]:
    """One child run; ``wait``: the OpenMP wait policy ("PASSIVE", "ACTIVE" or "default": unset)."""
    before = busy_cores()
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait != "default":
        env["OMP_WAIT_POLICY"] = wait
    spin = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    base = {"threads": threads, "wait": wait, "busy_core": busy, "busy_cores_before": before}
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--demo", str(demo), "--threads", str(threads),
                              "--steps", str(steps)], check=True, capture_output=True, text=True, env=env,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "timed_out": True, "wall_s": float(timeout), "step_s": float("nan")}
    finally:
        if spin is not None:
            spin.kill()
            spin.wait()
    return {**base, **json.loads(out.stdout.strip().splitlines()[-1]), "timed_out": False}


def table(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Median wall and step seconds per (busy, threads, wait policy); a timed-out run counts as its limit."""
    out = []
    for busy in (False, True):
        for t, wait in sorted({(r["threads"], r["wait"]) for r in rows}):
            sel = [r for r in rows if r["busy_core"] == busy and r["threads"] == t and r["wait"] == wait]
            if sel:
                out.append({"busy_core": busy, "threads": t, "wait": wait, "n": len(sel),
                            "timed_out": sum(r["timed_out"] for r in sel),
                            "wall_s": statistics.median(r["wall_s"] for r in sel),
                            "step_s": statistics.median(r["step_s"] for r in sel),
                            "background_busy_cores": statistics.median(r["busy_cores_before"] for r in sel)})
    return out


def conditions(threads: List[int], waits: List[str]) -> List[Tuple[int, str]]:
    """(threads, wait policy) pairs; the policy only matters with more than one thread."""
    return [(t, w) for t in threads for w in (waits if t > 1 else waits[:1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="/tmp/bcos_clip_threads_bench", help="demo folder with (or for) world + teacher")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--waits", nargs="+", default=["PASSIVE", "default"],
                    help="OpenMP wait policies to compare with more than one thread (default: unset = spinning)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds after which a run is stopped")
    ap.add_argument("--out", default=None, help="write the runs and the table as JSON here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    demo = Path(args.demo)
    if args.child:
        print(json.dumps(child(demo, args.threads[0], args.steps)))
        return
    prepare(demo)
    rows = []
    pairs = conditions(args.threads, args.waits)
    for rep in range(args.repeats):
        for busy in (False, True):
            for t, wait in pairs if rep % 2 == 0 else pairs[::-1]:
                rows.append({**run_one(demo, t, wait, args.steps, busy, args.timeout), "repeat": rep})
                print(json.dumps(rows[-1]), flush=True)
    result = {"steps": args.steps, "runs": rows, "table": table(rows)}
    for r in result["table"]:
        print(f"busy core: {'yes' if r['busy_core'] else 'no '}  threads {r['threads']} wait {r['wait']:8s}: "
              f"train() {r['wall_s']:.1f} s, {r['step_s']:.2f} s/step (median of {r['n']}, {r['timed_out']} "
              f"timed out; background before: {r['background_busy_cores']:.2f} busy cores)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
