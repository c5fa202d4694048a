"""Every subcommand fed malformed input (tests/_bad_cases.py): exit code 2 (1 for a failed eval row),
exactly one line on stderr, `bcos-clip <command>: error: ...` naming the problem, never a traceback.

Runs `bcos_clip.cli.main` in-process; one subprocess run checks the real stderr. With
BCOS_CLIP_BAD_INPUT_LOG=FILE each case appends {command, what, code, line} to FILE (JSON lines), from
which scripts/bad_input_table.py writes the table of the issue note.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys
from collections import Counter

import pytest

from bcos_clip.cli import main
from tests._bad_cases import CASES, Case
from tests._bad_world import build_world
from tests._train_data import subprocess_env

COMMANDS = ("bcosify", "eval", "report", "train", "serve", "import-official", "export", "explain", "localize",
            "bench", "demo")


def record(command: str, what: str, code: int, line: str) -> None:
    """Append one row of the bad-input table (only when BCOS_CLIP_BAD_INPUT_LOG names a file)."""
    path = os.environ.get("BCOS_CLIP_BAD_INPUT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"command": command, "what": what, "code": code, "line": line}) + "\n")


@pytest.fixture(scope="module")
def world(tiny_rn_bcos, tiny_rn, tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("bad_world"), tiny_rn_bcos, tiny_rn)


@pytest.fixture(autouse=True)
def no_progress_bars_and_no_server(monkeypatch):
    """tqdm bars would add stderr lines; a case that got as far as starting a server is a failure."""
    import tqdm.std

    init = tqdm.std.tqdm.__init__
    monkeypatch.setattr(tqdm.std.tqdm, "__init__", lambda self, *a, **k: init(self, *a, **{**k, "disable": True}))
    uvicorn = pytest.importorskip("uvicorn")

    def refuse(*args, **kwargs):
        raise AssertionError("the malformed input was accepted: the server would start")

    monkeypatch.setattr(uvicorn, "run", refuse)


def run_main(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse: --help or a refused flag
        return exc.code


def argv_of(case: Case, world, out: str) -> list:
    fields = {**dataclasses.asdict(world), "out": out}
    return shlex.split(case.argv.format(**fields))


def logged_tracebacks(caplog) -> list:
    return [r for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_no_traceback(case, world, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    rc = run_main(argv_of(case, world, str(tmp_path / "out")))
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if case.code == 1:  # a failed eval row: the suite goes on, the row's error is one ERROR log line
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] + lines
    record(case.command, case.what, rc, lines[0] if len(lines) == 1 else " / ".join(lines))
    assert "Traceback" not in out + err and not logged_tracebacks(caplog)
    assert rc == case.code, (rc, lines)
    assert len(lines) == 1, lines
    if case.code == 2:
        assert lines[0].startswith(f"bcos-clip {case.command}: error: "), lines[0]
    assert case.expect in lines[0], lines[0]


def test_every_subcommand_is_fed_many_malformed_inputs():
    per_command = Counter(c.command for c in CASES)
    assert set(per_command) == set(COMMANDS), per_command
    assert min(per_command.values()) >= 5, per_command
    assert len({c.id for c in CASES}) == len(CASES), "duplicate case names"


def test_debug_log_level_shows_the_traceback(world, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    rc = run_main(["--log-level", "DEBUG", "explain", "--model", world.ckpt, "--prompt", "x",
                   "--image", world.path("bomb.png"), "--output", str(tmp_path / "o")])
    assert rc == 2 and len(capsys.readouterr().err.splitlines()) == 1
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)


def test_a_programming_error_still_shows_its_traceback(world, monkeypatch):
    import bcos_clip.cli.export as export_cli

    def broken(args):
        raise AttributeError("a bug, not bad input")

    monkeypatch.setattr(export_cli, "run", broken)
    with pytest.raises(AttributeError):
        main(["export", world.ckpt, "--output", "unused"])


def test_the_real_stderr_is_one_line(world, tmp_path):
    """The installed entry point, as a user runs it: the last stderr line is the error, no traceback."""
    cmd = [sys.executable, "-m", "bcos_clip.cli", "localize", "--model", world.ckpt, "--dataset", "wds/toy",
           "--dataset_root", world.wds, "--output", str(tmp_path / "o"), "--grid", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["bcos-clip localize: error: argument --grid: must be >= 1, got 0"]
