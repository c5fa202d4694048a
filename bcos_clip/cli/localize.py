"""`bcos-clip localize`: the grid pointing game on a CLIP_benchmark wds/ dataset.

Examples::

    bcos-clip localize --model runs/student --dataset wds/imagenet1k --dataset_root /data/wds/{dataset_cleaned} \\
        --output loc --grid 3 --n-grids 500
    bcos-clip localize --model RN50 --pretrained openai --method gradcam --dataset wds/imagenet1k \\
        --dataset_root /data/wds/{dataset_cleaned} --output loc

n x n grids of correctly and confidently classified images of distinct classes; for each cell, the map
of its class prompt scores the share of positive mass inside the cell (1 = perfect, 1/n^2 = chance).
Writes localization_<dataset>_<method>.json, a histogram PNG and example grids.
"""
from __future__ import annotations

import argparse

from bcos_clip.cli.common import add_model, add_output
from bcos_clip.cli.types import integer, non_negative_int, positive_int, probability, smoothing_kernel
from bcos_clip.runtime.output_paths import check_output_dir

METHOD_NAMES = ("bcos", "gradient", "input_x_gradient", "integrated_gradients", "gradcam")


def _flag(p: argparse.ArgumentParser, name: str, **kw: object) -> None:
    """`--a-b` with its `--a_b` spelling (CLIP_benchmark uses underscores)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    p.add_argument(*spellings, dest=name.replace("-", "_"), **kw)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localize", help="grid pointing game (text-prompt localisation)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(p)
    _flag(p, "dataset", required=True, help="wds/<name> (a CLIP_benchmark webdataset folder)")
    _flag(p, "dataset-root", required=True, help="the dataset folder, or a template with {dataset} / {dataset_cleaned}")
    _flag(p, "method", default="bcos", choices=METHOD_NAMES,
          help="bcos (B-cos contributions; needs a bcos_clip checkpoint) or a post-hoc baseline")
    _flag(p, "grid", type=positive_int, default=3, help="n of the n x n grids")
    _flag(p, "n-grids", type=positive_int, default=100, help="number of grids (the paper: 500)")
    _flag(p, "seed", type=integer, default=0, help="seed of the grid sampling")
    _flag(p, "split", default="test", help="dataset split to draw images from")
    _flag(p, "per-class", type=positive_int, default=8, help="confident images kept per class")
    _flag(p, "max-images", type=positive_int, default=None, help="stop reading after this many images")
    _flag(p, "threshold", type=probability, default=0.5, help="confidence: softmax(100 cos) of the true class >= this")
    _flag(p, "smooth", type=smoothing_kernel, default=None, help="box-smoothing kernel (odd; default about a quarter of a cell)")
    _flag(p, "templates", default=None, help="templates: the dataset's own (default), 'default', 'openai', "
          "'simple', one template with {c}, or a file")
    _flag(p, "batch-size", type=positive_int, default=4, help="grids explained per batch")
    _flag(p, "examples", type=non_negative_int, default=4, help="example grids written as PNG")
    _flag(p, "device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    add_output(p, help="folder for the JSON and PNGs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.apps.localize import LocalizeConfig, run_localization

    check_output_dir(args.output)

    cfg = LocalizeConfig(model=args.model, pretrained=args.pretrained, dataset=args.dataset,
                         dataset_root=args.dataset_root, output=args.output, method=args.method, grid=args.grid,
                         n_grids=args.n_grids, seed=args.seed, split=args.split, per_class=args.per_class,
                         max_images=args.max_images, threshold=args.threshold, smooth=args.smooth,
                         templates=args.templates, batch_size=args.batch_size, n_examples=args.examples,
                         device=args.device)
    summary = run_localization(cfg)
    print(f"{summary['method']} on {summary['dataset']}: mean {summary['mean']:.3f} over {summary['n_grids']} "
          f"{cfg.grid}x{cfg.grid} grids (chance {summary['chance']:.3f}); wrote {summary['files']['json']}")
    return 0
