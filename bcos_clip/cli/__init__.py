"""`bcos-clip`: a thin shell over library calls and apps.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)`` (which
registers the subcommand and sets ``func=run``) and ``run(args) -> int``. Bad input of any subcommand
ends as one line on stderr and exit code 2 (``bcos_clip.cli.errors``); numeric flags are checked while
parsing (``bcos_clip.cli.types``). Before a subcommand runs, ``bcos_clip.cli.preflight`` checks the
optional dependencies its command line needs (``NEEDS``: one entry per subcommand). Torch threads follow
``bcos_clip.runtime.threads`` (torch's default count; OpenMP threads wait passively).
"""
from __future__ import annotations

from bcos_clip.runtime.threads import prefer_passive_waiting

prefer_passive_waiting()  # OpenMP threads wait without spinning; read when torch loads, so before any import of it

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional  # noqa: E402

from bcos_clip.cli.errors import OneLineParser, describe, expected_errors  # noqa: E402
from bcos_clip.cli.preflight import check  # noqa: E402
from bcos_clip.cli.types import log_level  # noqa: E402

# One module per subcommand, imported lazily so `bcos-clip X --help` stays quick.
SUBCOMMANDS = ("bcosify", "eval", "report", "train", "serve", "import-official", "export", "explain", "localize", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="bcos-clip",
        description="B-cosify, distil, evaluate and explain CLIP image towers.",
    )
    parser.add_argument("--log-level", default="INFO", type=log_level,
                        help="logging level (DEBUG, INFO, WARNING, ERROR); DEBUG also shows the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"bcos_clip.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``bcos-clip`` with ``argv``; returns the exit code (argparse errors raise SystemExit(2))."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check(args.command, args)  # optional dependencies, before any work (one line naming the extra)
        return int(args.func(args) or 0)
    except expected_errors() as exc:
        # One clear line for bad input; the traceback is available with --log-level DEBUG. Other
        # exceptions are bugs and keep their traceback.
        logging.getLogger("bcos_clip").debug("bcos-clip %s failed", args.command, exc_info=True)
        print(f"bcos-clip {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 2
