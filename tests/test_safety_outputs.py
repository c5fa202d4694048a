"""Output paths are checked before any work: every writing subcommand fails at once, with one line naming
the flag, when its output is an existing file, lies under a file, or cannot be created (one helper,
bcos_clip.runtime.output_paths, used by all)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from bcos_clip.cli import main
from bcos_clip.runtime.output_paths import OutputPathError, check_output_dir, check_output_file

UNWRITABLE = "/proc/bcos_clip_out"  # no process can create folders in /proc, root included

# subcommand -> (argv with OUT for the checked path, the flag named, the library call the work starts with)
COMMANDS = {
    "bcosify": (["bcosify", "--model", "RN50", "--output", "OUT"], "--output", "bcos_clip.load_clip"),
    "eval": (["eval", "--model", "RN50", "--dataset", "wds/x", "--dataset_root", "r", "--output", "OUT"],
             "--output", "bcos_clip.evaluation.suite.run_suite"),
    "eval-cache": (["eval", "--model", "RN50", "--dataset", "wds/x", "--dataset_root", "r", "--output", "OK",
                    "--cache_dir", "OUT"], "--cache_dir", "bcos_clip.evaluation.suite.run_suite"),
    "explain": (["explain", "--model", "m", "--image", "i.png", "--prompt", "a dog", "--output", "OUT"],
                "--output", "bcos_clip.apps.explain_files.explain_files"),
    "localize": (["localize", "--model", "m", "--dataset", "wds/x", "--dataset_root", "r", "--out", "OUT"],
                 "--output", "bcos_clip.apps.localize.run_localization"),
    "export": (["export", "ckpt", "--output", "OUT"], "--output", "bcos_clip.apps.export.hub_folder.export"),
    "import-official": (["import-official", "last.ckpt", "--output", "OUT"], "--output",
                        "bcos_clip.models.official.import_official_to"),
    "demo": (["demo", "--quick", "--out", "OUT"], "--output", "bcos_clip.apps.demo.run.run_demo"),
    "report": (["report", "OK", "--output", "OUT"], "--output", "bcos_clip.evaluation.report.build_report"),
    "train": (["train", "--model", "m", "--train-data", "d", "--steps", "1", "--output", "OUT"], "--output",
              "bcos_clip.train.loop.build_session"),
    "train-text-cache": (["train", "--model", "m", "--train-data", "d", "--steps", "1", "--output", "OK",
                          "--text-cache", "OUT"], "--text-cache", "bcos_clip.train.loop.build_session"),
    "bench": (["bench", "--quick", "--output", "OUT"], "--output", "bcos_clip.apps.bench.run.run_bench"),
}


def _bad_paths(tmp_path: Path, command: str):
    """(case, path) pairs every command must refuse: bench writes a file, the others folders."""
    a_file = tmp_path / "results.txt"
    a_file.write_text("the user's file\n")
    in_the_way = tmp_path / "folder"
    in_the_way.mkdir()
    first = ("an existing folder", in_the_way) if command == "bench" else ("an existing file", a_file)
    return [first, ("under a file", a_file / "sub" / "out"), ("not creatable", Path(UNWRITABLE) / "out")]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_writing_command_checks_its_output_before_working(command, tmp_path, monkeypatch, capsys):
    argv, flag, work = COMMANDS[command]
    module, name = work.rsplit(".", 1)

    def started(*args, **kwargs):
        raise AssertionError(f"{command}: the work started before the output path was checked")

    monkeypatch.setattr(importlib.import_module(module), name, started)
    (tmp_path / "OK").mkdir()
    for case, bad in _bad_paths(tmp_path, command):
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        capsys.readouterr()
        args = [str(bad) if a == "OUT" else str(tmp_path / "OK") if a == "OK" else a for a in argv]
        code = main(["--log-level", "WARNING", *args])
        err = capsys.readouterr().err.strip()
        assert code == 2, (case, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (case, err)
        assert flag in err and str(bad) in err, (case, err)
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before, case  # nothing created or removed
    assert (tmp_path / "results.txt").read_text() == "the user's file\n"


def test_checks_accept_new_nested_and_existing_paths_and_leave_nothing(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", "--output") == tmp_path / "a" / "b"
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(None) is None
    (tmp_path / "old.json").write_text("{}")
    assert check_output_file(tmp_path / "old.json") == tmp_path / "old.json"  # a file output may be replaced
    assert check_output_file(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]  # the probes are gone


def test_broken_links_are_refused(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "missing")
    with pytest.raises(OutputPathError, match="broken link"):
        check_output_dir(tmp_path / "gone")
    with pytest.raises(OutputPathError, match="broken link"):
        check_output_file(tmp_path / "gone")
    with pytest.raises(OutputPathError, match="broken link"):
        check_output_dir(tmp_path / "gone" / "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="cannot write"):
            check_output_dir(locked / "out", "--output")
    finally:
        locked.chmod(0o700)
