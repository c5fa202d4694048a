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
from tests._bad_cases import CASES, ISSUE_LIST, Case, record
from tests._bad_world import build_world
from tests._train_data import subprocess_env

COMMANDS = ("bcosify", "eval", "report", "train", "serve", "import-official", "export", "explain", "localize",
            "bench", "demo")


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
    assert min(per_command.values()) >= 5 and len(CASES) >= 127, per_command
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), "duplicate case names"
    assert {i for i in ISSUE_LIST if not i.startswith("serve: HTTP")} <= set(ids)


def test_a_failed_run_leaves_earlier_files_alone(world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"notes.txt": "my notes\n", "results.json": '{"top1": 0.5}\n'}
    for name, text in earlier.items():
        (out / name).write_text(text)
    runs = [["train", "--model", world.teacher, "--pretrained", world.teacher_pt, "--train-data",
             world.path("corrupt"), "--output", str(out), "--steps", "2", "--batch-size", "2", "--workers", "0",
             "--device", "cpu", "--save-every", "1"],
            ["explain", "--model", world.ckpt, "--image", world.path("bomb.png"), "--prompt", "x",
             "--output", str(out)],
            ["bcosify", "--model", world.path("model_unknown.json"), "--output", str(out)],
            ["export", world.path("truncated_ckpt"), "--output", str(out)]]
    for argv in runs:
        assert run_main(argv) == 2, capsys.readouterr().err
        assert {n: (out / n).read_text() for n in earlier} == earlier
    assert not (out / "checkpoints").exists()  # the run that read nothing usable saved nothing
    assert len(capsys.readouterr().err.splitlines()) == len(runs)
    assert open(world.file).read() == "I am a file\n"  # every "--output is a file" case left it alone


def test_samples_without_a_caption_are_counted_and_reported(world, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", world.teacher, "--pretrained", world.teacher_pt, "--train-data",
            world.path("mixedcap"), "--output", str(out), "--steps", "1", "--batch-size", "8", "--workers", "0",
            "--device", "cpu", "--precision", "fp32", "--shuffle-buffer", "1", "--text-source", "captions"]
    assert run_main(argv) == 0
    assert "no_caption=4" in capsys.readouterr().out  # 8 samples, every other one without .txt
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranks"][0]["counters"]["bad_data_no_caption"] == 4


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
