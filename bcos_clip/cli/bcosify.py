"""`bcos-clip bcosify`: convert an open_clip model and save a bcos_clip checkpoint."""
from __future__ import annotations

import argparse

from bcos_clip.cli.common import add_model, add_output
from bcos_clip.cli.types import bcos_b
from bcos_clip.runtime.output_paths import check_output_dir

CALIBRATE_BATCHES = 10
CALIBRATE_BATCH_SIZE = 32


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
    g = p.add_argument_group("BatchNorm recalibration (B != 1 or no biases: the plain statistics no longer fit)")
    g.add_argument("--calibrate-data", default=None,
                   help="refit the uncentered BatchNorm statistics on these images before saving: an image folder, "
                        "webdataset shards (a folder or a {00000..00009}.tar pattern) or a CLIP_benchmark wds/ "
                        "dataset folder (its train split)")
    g.add_argument("--calibrate-batches", type=int, default=None,
                   help=f"forward passes of the recalibration (default {CALIBRATE_BATCHES})")
    g.add_argument("--calibrate-batch-size", type=int, default=None,
                   help=f"images per recalibration pass (default {CALIBRATE_BATCH_SIZE})")
    add_output(p, help="checkpoint directory to write")
    p.set_defaults(func=run)


def _recalibrate(model, args: argparse.Namespace) -> dict:
    """Refit the BatchNorm statistics on --calibrate-data; returns what was done (for config.json)."""
    from bcos_clip.data.stream.calibration import calibration_batches
    from bcos_clip.models import recalibrate_batchnorm

    n = CALIBRATE_BATCHES if args.calibrate_batches is None else args.calibrate_batches
    size = CALIBRATE_BATCH_SIZE if args.calibrate_batch_size is None else args.calibrate_batch_size
    for flag, value in (("--calibrate-batches", n), ("--calibrate-batch-size", size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    report = recalibrate_batchnorm(model, calibration_batches(args.calibrate_data, model.preprocess, size), n)
    print(report.summary())
    return {"data": str(args.calibrate_data), "images": report.images, "batches": report.batches,
            "layers": len(report.refitted)}


def run(args: argparse.Namespace) -> int:
    import bcos_clip
    from bcos_clip.models.strict_json import dumps_strict

    check_output_dir(args.output)
    if args.calibrate_data is None and (args.calibrate_batches, args.calibrate_batch_size) != (None, None):
        raise ValueError("--calibrate-batches / --calibrate-batch-size need --calibrate-data")
    clip, _, _ = bcos_clip.load_clip(args.model, args.pretrained)
    model = bcos_clip.bcosify(clip, b=args.b, bias=args.bias, qk=args.qk, input_encoding=args.input_encoding)
    extra = {"batchnorm_recalibration": _recalibrate(model, args)} if args.calibrate_data else {}
    out = bcos_clip.save(model, args.output, extra=extra)
    (out / "conversion_report.json").write_text(dumps_strict({**model.report.to_dict(), **extra},
                                                             "conversion_report.json", indent=2))
    print(f"{model.report.summary()}\nwrote {out}")
    return 0
