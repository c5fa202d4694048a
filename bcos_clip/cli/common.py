"""Flag helpers shared by the subcommands."""
from __future__ import annotations

import argparse


def add_output(parser: argparse.ArgumentParser, required: bool = True, help: str = "output directory") -> None:
    """`--output DIR` with the `--out` alias, as every writing subcommand takes it."""
    parser.add_argument("--output", "--out", dest="output", required=required, help=help)


def add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required,
                        help="a bcos_clip checkpoint directory, an open_clip model name (RN50, ViT-B-16, ...) "
                             "or an open_clip JSON model config")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip pretrained tag (e.g. openai) or a local checkpoint file")
