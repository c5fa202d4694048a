"""``bcos-clip report RESULTS_DIR --output DIR``: report.md (per task, datasets grouped natural /
specialized / structured with group means, one column per model and each model's difference to the
first), report.csv and group_means.png from the result JSON files of ``bcos-clip eval``."""
from __future__ import annotations

import argparse
from typing import Any

from bcos_clip.runtime.output_paths import check_output_dir


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="tables and a chart from eval results",
                              description=__doc__)
    p.add_argument("results_dir", help="folder with eval result JSON files (searched recursively)")
    p.add_argument("--output", "--out", dest="output", default=None,
                   help="where report.md / report.csv / group_means.png go (default: RESULTS_DIR)")
    p.add_argument("--models", default=None,
                   help="comma-separated model labels: column order, the first is the reference "
                        "(default: plain CLIP models first, then B-cos)")
    p.add_argument("--groups", default="dataset_type.csv",
                   help="dataset,type CSV for results without a group (default: eval/dataset_type.csv)")
    p.add_argument("--plot-backend", "--plot_backend", dest="plot_backend", default=None,
                   choices=["matplotlib", "pillow"], help="default: matplotlib if installed, else Pillow")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.evaluation.report import build_report
    from bcos_clip.evaluation.suite_files import load_groups

    check_output_dir(args.output or args.results_dir)

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    paths = build_report(args.results_dir, args.output or args.results_dir, models=models,
                         groups=load_groups(args.groups), plot_backend=args.plot_backend)
    print(f"wrote {paths.markdown}, {paths.csv}, {paths.plot}")
    return 0
