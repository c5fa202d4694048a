"""`bcos-clip demo`: the whole pipeline offline on a CPU — shapes world, tiny CLIP teacher, B-cosified
and distilled student, evaluation, explanations, grid pointing game — written to OUTPUT/report.md (with
figures) and OUTPUT/summary.json. ``--compare-losses`` also distils two students with the other losses
(siglip, cosine) and compares the three.

Examples (times on an idle 2-core CPU; they vary about 2x between machines)::

    bcos-clip demo                       # full demo into ./demo_out (about 5 minutes)
    bcos-clip demo --quick --out /tmp/d  # a smaller world and shorter training (about 1 minute)
    bcos-clip demo --arch vit            # a tiny ViT teacher instead of the ModifiedResNet (about 7 minutes)
    bcos-clip demo --compare-losses      # + two more students (about 3 minutes more)

A second run reuses the world, the teacher and every finished stage whose inputs did not change.
Settings (steps, learning rates, prompts, ...) are in configs/demo.yaml; pass --settings FILE for others.
"""
from __future__ import annotations

import argparse

from bcos_clip.cli.common import add_output
from bcos_clip.cli.types import integer, positive_int
from bcos_clip.runtime.output_paths import check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the embedded shapes world (CPU, offline)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output(p, required=False, help="demo folder (default: ./demo_out): world, teacher, students, eval, "
               "figures, report.md, summary.json. A new or empty folder, or one an earlier demo made (a "
               "non-empty folder the demo did not make is refused)")
    p.add_argument("--quick", action="store_true", help="a smaller world and shorter training (CI runs this)")
    p.add_argument("--arch", default="rn", choices=("rn", "vit"),
                   help="teacher image tower: rn (tiny ModifiedResNet, default) or vit (tiny ViT)")
    p.add_argument("--seed", type=integer, default=0, help="seed of the world, the teacher and the students")
    p.add_argument("--settings", default=None, help="a demo settings YAML (default: the shipped configs/demo.yaml)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's, one per physical core)")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N")
    p.add_argument("--compare-losses", action="store_true",
                   help="also distil a student with each loss of the settings' compare.losses (siglip, cosine) "
                        "and compare them with the main one (about twice the time of the main path)")
    p.set_defaults(func=run, output="demo_out")


def run(args: argparse.Namespace) -> int:
    from bcos_clip.apps.demo.run import run_demo
    from bcos_clip.apps.demo.config import DemoConfig
    from bcos_clip.apps.demo.report import duration

    check_output_dir(args.output or "demo_out")

    cfg = DemoConfig(output=args.output or "demo_out", quick=args.quick, arch=args.arch, seed=args.seed,
                     settings=args.settings, threads=args.threads, device=args.device,
                     compare_losses=args.compare_losses)
    summary = run_demo(cfg)
    if cfg.quick:
        print("--quick is a smoke run (small world, few steps); the goals below are set for the full demo")
    for row in summary["targets"]:
        print(f"{'ok  ' if row['met'] else 'MISS'} {row['target']}: {row['value']} (goal {row['goal']})")
    t = summary["timing"]
    print(f"report: {cfg.output}/report.md  ({duration(t['wall_s'])} wall, {duration(t['cpu_s'])} CPU)")
    return 0
