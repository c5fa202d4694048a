"""`bcos-clip`: a thin shell over library calls and apps.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)`` (which
registers the subcommand and sets ``func=run``) and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# One module per subcommand, imported lazily so `bcos-clip X --help` stays quick.
SUBCOMMANDS = ("bcosify", "eval", "report", "train", "serve", "import-official", "export", "explain", "localize", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bcos-clip",
        description="B-cosify, distil, evaluate and explain CLIP image towers.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"bcos_clip.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        # One clear line for bad input; the traceback is available with --log-level DEBUG.
        logging.getLogger("bcos_clip").debug("error", exc_info=True)
        print(f"bcos-clip {args.command}: error: {exc}", file=sys.stderr)
        return 2
