"""`bcos-clip export`: a hub-style folder (config.json, safetensors, README.md model card) of a checkpoint."""
from __future__ import annotations

import argparse

from bcos_clip.cli.common import add_output
from bcos_clip.runtime.output_paths import check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a hub-style folder with a model card for a bcos_clip checkpoint",
        description="Validate a bcos_clip checkpoint and write a Hugging Face hub-style folder: config.json and "
                    "safetensors (byte-identical, so bcos_clip.load reads it back exactly), the run's reports and "
                    "result records, and a README.md model card (base model, bcosify settings, training data, "
                    "benchmark results). train_config.json, metrics.jsonl and results/*.json are looked for in "
                    "and up to two levels above the checkpoint directory.")
    p.add_argument("checkpoint", metavar="DIR", help="bcos_clip checkpoint directory (config.json + model.safetensors)")
    add_output(p, help="folder to write (created)")
    p.add_argument("--results", nargs="*", default=[],
                   help="further evaluation result files or folders (bcos-clip eval --output) to summarise")
    p.add_argument("--license", default=None, help="license identifier for the card's metadata (e.g. mit)")
    p.add_argument("--title", default=None, help="title of the model card")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bcos_clip.apps.export.hub_folder import export

    check_output_dir(args.output)

    out = export(args.checkpoint, args.output, results=args.results, license=args.license, title=args.title)
    print(f"wrote {out} (README.md model card, config.json, model.safetensors)")
    return 0
