"""The bad-input tables of issue 13, generated from a run of the tests (not written by hand).

    python scripts/bad_input_table.py                 # runs the tests, prints markdown
    python scripts/bad_input_table.py --out note.md   # ... into a file
    python scripts/bad_input_table.py --log rows.jsonl  # render rows of an earlier run

Runs tests/test_cli_bad_input.py and tests/test_serve_bad_requests.py with BCOS_CLIP_BAD_INPUT_LOG set: each
case appends {command, what, code, line, issue}. Prints the count per entry point, the table of the inputs
the issue lists, and every case: its exit code (HTTP status for serve requests) and the one line it gives.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_cli_bad_input.py", "tests/test_serve_bad_requests.py"]
TMP = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/")


def run_tests(log: Path) -> int:
    env = {**os.environ, "BCOS_CLIP_BAD_INPUT_LOG": str(log), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO,
                           env=env)


def cell(text: str) -> str:
    return TMP.sub(".../", str(text)).replace("|", "\\|")


def table(rows: List[Dict]) -> List[str]:
    out = ["| entry point | bad input | exit | the one line now |", "|---|---|---|---|"]
    out += [f"| {r['command']} | {cell(r['what'])} | {r['code']} | `{cell(r['line'])}` |" for r in rows]
    return out


def render(rows: List[Dict]) -> str:
    rows = list({(r["command"], r["what"]): r for r in rows}.values())  # last run of a case wins
    counts = Counter(r["command"] for r in rows)
    lines = ["### Malformed inputs the tests try, per entry point", "", "| entry point | cases |", "|---|---|"]
    lines += [f"| {c} | {n} |" for c, n in counts.items()] + [f"| **total** | **{len(rows)}** |", ""]
    lines += ["### The bad inputs of the issue: exit code and the one line now", ""]
    lines += table([r for r in rows if r.get("issue")]) + ["", "### Every case", ""] + table(rows)
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", help="render this JSON-lines file instead of running the tests")
    ap.add_argument("--out", help="write the markdown here (default: stdout)")
    args = ap.parse_args()
    if args.log:
        log, code = Path(args.log), 0
    else:
        log = Path(tempfile.mkdtemp()) / "bad_inputs.jsonl"
        code = run_tests(log)
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    text = render(rows)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
