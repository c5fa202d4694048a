"""`bcos-clip serve`: the interactive explanation explorer (a local web page + JSON API).

Examples::

    bcos-clip serve --model runs/demo/student
    bcos-clip serve --model runs/demo/student --teacher runs/demo/teacher_rn.json \\
        --teacher-pretrained runs/demo/teacher_rn.pt --examples my_images/
    curl -F image=@cat.jpg -F prompts="a cat" -F prompts="grass" http://127.0.0.1:8000/explain

Listens on 127.0.0.1 unless --host says otherwise.
"""
from __future__ import annotations

import argparse
from typing import Any

from bcos_clip.cli.types import non_negative_int, port, positive_float, positive_int


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="interactive explanation explorer in the browser",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a bcos_clip B-cos checkpoint directory (from bcosify / train / demo)")
    p.add_argument("--teacher", default=None,
                   help="the plain teacher CLIP (open_clip name or JSON config) for post-hoc baselines")
    p.add_argument("--teacher-pretrained", "--teacher_pretrained", dest="teacher_pretrained", default=None,
                   help="pretrained tag or weights file of --teacher")
    p.add_argument("--baseline", action="append", default=[],
                   help="a post-hoc baseline to offer on the teacher: gradient, input_x_gradient, "
                        "integrated_gradients, gradcam (repeatable; default: all)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=port, default=8000, help="port to listen on")
    p.add_argument("--examples", default=None, help="a folder of images offered as examples on the page")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--no-color", "--no-colour", dest="color", action="store_false",
                   help="heat maps only: do not keep the per-channel weights colour explanations need "
                        "(6x less memory per cached image)")
    p.add_argument("--strategy", choices=["tensor", "prompts"], default="tensor",
                   help="tensor: build each image's per-pixel contribution tensor once (D Jacobian rows), "
                        "then any prompt is one einsum (small towers, GPUs); prompts: one forward + one "
                        "Jacobian row per new prompt (large towers on a CPU, e.g. RN50 at 224 px)")
    p.add_argument("--cache-size", type=non_negative_int, default=16, help="images whose explanation state is cached")
    p.add_argument("--cache-mb", type=positive_float, default=2048.0,
                   help="memory budget of the image cache in MiB")
    p.add_argument("--max-upload-mb", type=positive_float, default=10.0, help="largest image upload in MiB")
    p.add_argument("--max-image-side", type=positive_int, default=4096,
                   help="largest image width or height in pixels")
    p.add_argument("--max-prompts", type=positive_int, default=16, help="most prompts per request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.apps.serve.server import ServeConfig, serve
    from bcos_clip.apps.serve.io import Limits

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_image_side=args.max_image_side,
                    max_prompts=args.max_prompts)
    config = ServeConfig(model=args.model, teacher=args.teacher, teacher_pretrained=args.teacher_pretrained,
                         baselines=tuple(args.baseline), host=args.host, port=args.port, examples=args.examples,
                         device=args.device, color=args.color, strategy=args.strategy,
                         cache_entries=args.cache_size, cache_mb=args.cache_mb, limits=limits)
    serve(config)
    return 0
