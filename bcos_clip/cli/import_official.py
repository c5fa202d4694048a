"""`bcos-clip import-official`: turn a checkpoint released with the paper into a bcos_clip checkpoint."""
from __future__ import annotations

import argparse

from bcos_clip.cli.common import add_output


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official", help="import a B-cosified CLIP RN50 checkpoint released with the paper",
        description="Import a B-cosified CLIP RN50 checkpoint of shrebox/B-cosification (PyTorch Lightning "
                    "last.ckpt, its stripped .pth, or safetensors) into a bcos_clip checkpoint that reproduces "
                    "its forward (compatibility spec: B=2, no biases, Normalize6 input, plain-linear attention "
                    "pool). Their checkpoint holds no text tower: it comes from --teacher/--pretrained.")
    p.add_argument("path", help="the released checkpoint file (last.ckpt / .pth / .safetensors)")
    add_output(p, help="bcos_clip checkpoint directory to write")
    p.add_argument("--teacher", default="RN50",
                   help="open_clip model name or JSON config of the CLIP the checkpoint was distilled from "
                        "(its text tower, tokenizer and preprocessing are used); default RN50")
    p.add_argument("--pretrained", default="openai",
                   help="pretrained tag or local weights file of --teacher (default openai; 'none' = random "
                        "init, for tests only)")
    p.add_argument("--ema", action="store_true", help="import the EMA weights (ema.module.model.*) instead")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read the checkpoint with full unpickling (runs code in the file: only for files you "
                        "trust). Without it, tensors and the objects a trainer pickles beside them (Lightning, "
                        "numpy, their config classes) are read as inert records and any other object refuses "
                        "the file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.models.official import import_official_to

    pretrained = None if str(args.pretrained).lower() in ("none", "") else args.pretrained
    out, info = import_official_to(args.path, args.output, teacher=args.teacher, pretrained=pretrained,
                                   ema=args.ema, trust_pickle=args.trust_pickle)
    print(f"imported {info['tensors_loaded']} tensors ({info['layout']} downsample keys; {info['dropped_unused']} "
          f"unused BN statistics dropped); "
          f"teacher image tower {info['teacher_visual']}; text tower from {info['text_tower']}\nwrote {out}")
    return 0
