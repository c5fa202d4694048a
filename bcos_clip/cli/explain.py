"""`bcos-clip explain`: B-cos explanations of image files for text prompts.

Example::

    bcos-clip explain --model runs/student --image dog.jpg --image cat.png \\
        --prompt "a dog" --prompt "a cat" --templates openai --output explanations

Writes one PNG per (image, prompt) ([image | colour explanation | overlay]), `sheet.png`,
`sheet_overlay.png` and `scores.json` (cosines, softmax over the prompts, bias, completeness check).
"""
from __future__ import annotations

import argparse
import json

from bcos_clip.cli.common import add_output
from bcos_clip.cli.types import number, smoothing_kernel
from bcos_clip.runtime.output_paths import check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain images for text prompts (PNGs + scores.json)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a bcos_clip checkpoint directory (B-cos model); for a plain "
                   "CLIP use `bcos-clip localize --method gradcam|gradient|...`")
    p.add_argument("--image", action="append", required=True, help="an image file (repeatable)")
    p.add_argument("--prompt", action="append", required=True, help="a text prompt, e.g. 'a dog' (repeatable)")
    p.add_argument("--templates", default=None,
                   help="prompt templates: 'default' ('a photo of {}.', the default), 'openai' (open_clip's 80 "
                        "ImageNet templates), 'simple', one template with {} or {c}, or a file (one a line)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--smooth", type=smoothing_kernel, default=None,
                   help="box window (odd, px) smoothing the colour explanation's opacity; default: as B-cos's "
                        "official visualisation, 15 px at 224 px input scaled with the input size (5 px at 64 "
                        "px); 0 = none. Heat maps are never smoothed")
    p.add_argument("--cell", type=number(int, 16, 4096), default=192,
                   help="panel size in pixels of the per-pair PNGs (16..4096); above the model's input size it is "
                        "rounded to a whole multiple of it, so that every map pixel is a square block")
    add_output(p, help="folder for the PNGs and scores.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.apps.explain_files import ExplainFilesConfig, explain_files

    check_output_dir(args.output)

    cfg = ExplainFilesConfig(model=args.model, images=tuple(args.image), prompts=tuple(args.prompt),
                             output=args.output, templates=args.templates, device=args.device,
                             smooth=args.smooth, cell=args.cell)
    summary = explain_files(cfg)
    for img in summary["images"]:
        best = max(range(len(img["scores"])), key=img["scores"].__getitem__)
        print(f"{img['path']}: best prompt {summary['prompts'][best]!r} (cos {img['scores'][best]:.3f})")
    print(f"wrote {len(summary['files']['pairs'])} panels, sheets and scores.json to {args.output}")
    print(json.dumps({"completeness_max_abs_error": summary["completeness_max_abs_error"]}))
    return 0
