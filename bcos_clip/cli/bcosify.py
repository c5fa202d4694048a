"""`bcos-clip bcosify`: convert an open_clip model and save a bcos_clip checkpoint."""
from __future__ import annotations

import argparse
import json

from bcos_clip.cli.common import add_model, add_output
from bcos_clip.cli.types import bcos_b


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bcosify", help="B-cosify an open_clip CLIP image tower and save it",
                       description="B-cosify the image tower of an open_clip model (every pretrained weight "
                                   "carried over) and write a bcos_clip checkpoint + conversion report.")
    add_model(p)
    p.add_argument("--b", type=bcos_b, default=2.0, help="B of every converted layer (1 = plain linear)")
    p.add_argument("--bias", action="store_true", help="keep all biases (with --b 1: the original function)")
    p.add_argument("--qk", choices=["bcos", "linear"], default="bcos",
                   help="attention q/k projections: B-cos linears (paper) or plain linears")
    p.add_argument("--input-encoding", choices=["folded", "normalize6"], default="folded",
                   help="CLIP normalisation folded into the first conv (default) or the official Normalize6")
    add_output(p, help="checkpoint directory to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import bcos_clip

    clip, _, _ = bcos_clip.load_clip(args.model, args.pretrained)
    model = bcos_clip.bcosify(clip, b=args.b, bias=args.bias, qk=args.qk, input_encoding=args.input_encoding)
    out = bcos_clip.save(model, args.output)
    (out / "conversion_report.json").write_text(json.dumps(model.report.to_dict(), indent=2))
    print(f"{model.report.summary()}\nwrote {out}")
    return 0
