"""Nothing lost in a run folder: `train` refuses a folder that holds a run (without --resume or --overwrite),
a broken `latest` link is an error, never a fresh start over old files; --overwrite removes only the old
run's files, and only once the new run is ready to start."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Dict

import pytest

from bcos_clip.cli import main
from bcos_clip.runtime.runfiles import read_metrics
from bcos_clip.train import TrainConfig, train
from bcos_clip.train.run_folder import RunFolderError, check_run_folder
from tests._train_data import write_img2dataset
from tests.test_train_loop import teacher_files  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_img2dataset(tmp_path_factory.mktemp("cc3m"), n_shards=1, per_shard=8)


@pytest.fixture(scope="module")
def finished_run(teacher_files, data, tmp_path_factory):
    """A finished 2-step run (checkpoint at step 2, metrics, summary) plus a note of the user's."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert _cli(teacher_files, data, out) == 0
    (out / "notes.txt").write_text("my notes on this run\n")
    return out


def _argv(teacher_files, data, out, *extra):
    return ["--log-level", "WARNING", "train", "--model", teacher_files[0], "--pretrained", teacher_files[1],
            "--train-data", data, "--output", str(out), "--steps", "2", "--batch-size", "4", "--workers", "0",
            "--log-every", "1", "--save-every", "2", "--lr", "1e-3", "--loss", "cosine", *extra]


def _cli(teacher_files, data, out, *extra) -> int:
    return main(_argv(teacher_files, data, out, *extra))


def snapshot(folder: Path) -> Dict[str, str]:
    """Every entry under ``folder``: file digests, link targets, folder markers."""
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_relaunch_without_resume_is_refused_and_the_run_survives(teacher_files, data, finished_run, capsys):
    before = snapshot(finished_run)
    capsys.readouterr()
    assert _cli(teacher_files, data, finished_run) == 2
    _one_line_error(capsys, "already holds a run", "--resume latest", "--overwrite")
    assert snapshot(finished_run) == before


def test_resuming_a_finished_run_again_changes_none_of_its_results(teacher_files, data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    before, config = snapshot(run), json.loads((run / "train_config.json").read_text())
    assert _cli(teacher_files, data, run, "--resume", "latest") == 0  # nothing left to train
    after = snapshot(run)
    launch = ("summary.json", "train_config.json")  # the records of the latest launch
    assert {k: v for k, v in after.items() if k not in launch} == {k: v for k, v in before.items() if k not in launch}
    assert json.loads((run / "train_config.json").read_text()) == {**config, "resume": "latest", "output": str(run)}


def test_broken_latest_is_an_error_not_a_fresh_start(teacher_files, data, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    latest = run / "checkpoints" / "latest"
    latest.unlink()
    latest.symlink_to("step_00000099")  # e.g. a copy that lost the step folder
    before = snapshot(run)
    capsys.readouterr()
    assert _cli(teacher_files, data, run, "--resume", "latest") == 2
    _one_line_error(capsys, "broken link", "latest")
    latest.unlink()  # no link at all, but step checkpoints: also no fresh start over them
    assert _cli(teacher_files, data, run, "--resume", "latest") == 2
    _one_line_error(capsys, "step_00000002", "no 'latest' link")
    assert {k: v for k, v in snapshot(run).items() if k != "checkpoints/latest"} == \
        {k: v for k, v in before.items() if k != "checkpoints/latest"}


def test_resume_latest_starts_fresh_only_in_a_new_folder_or_the_same_run_stopped_early(teacher_files, data, tmp_path):
    base = dict(model=teacher_files[0], pretrained=teacher_files[1], train_data=data, steps=2, batch_size=4,
                workers=0, loss="cosine", resume="latest")
    new = TrainConfig(output=str(tmp_path / "new" / "run"), **base)
    check_run_folder(new)  # a new folder: fresh start (the open_clip habit)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    cfg = TrainConfig(output=str(stopped), **base)
    TrainConfig(**{**cfg.to_dict(), "resume": None}).save_json(stopped)  # the first launch, killed at step 1
    (stopped / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    check_run_folder(cfg)
    other = TrainConfig(**{**cfg.to_dict(), "steps": 5})
    with pytest.raises(RunFolderError, match="other settings"):
        check_run_folder(other)


def test_overwrite_replaces_only_the_run_files(teacher_files, data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    (run / "checkpoints" / "step_00000007").mkdir()  # a step the new run will not write
    (run / "figures").mkdir()
    (run / "figures" / "loss.png").write_bytes(b"png")
    assert _cli(teacher_files, data, run, "--overwrite", "--steps", "1", "--save-every", "1") == 0
    assert (run / "notes.txt").read_text() == "my notes on this run\n"
    assert (run / "figures" / "loss.png").read_bytes() == b"png"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_00000001"]
    assert [r["step"] for r in read_metrics(run)] == [1]


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(teacher_files, finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    capsys.readouterr()
    assert _cli(teacher_files, str(tmp_path / "no_such_data" / "{0..3}.tar"), finished_run, "--overwrite") == 2
    assert snapshot(finished_run) == before


def test_resume_and_overwrite_together_and_another_runs_checkpoint(teacher_files, data, finished_run, tmp_path,
                                                                    capsys):
    before = snapshot(finished_run)
    capsys.readouterr()
    assert _cli(teacher_files, data, finished_run, "--overwrite", "--resume", "latest") == 2
    _one_line_error(capsys, "not both")
    other = tmp_path / "other"
    shutil.copytree(finished_run, other, symlinks=True)
    assert _cli(teacher_files, data, finished_run, "--resume", str(other / "checkpoints" / "step_00000002")) == 2
    _one_line_error(capsys, "holds another run")
    assert snapshot(finished_run) == before


def test_library_train_refuses_too(teacher_files, data, finished_run):
    cfg = TrainConfig(model=teacher_files[0], pretrained=teacher_files[1], train_data=data,
                      output=str(finished_run), steps=1, batch_size=4, workers=0, loss="cosine")
    before = snapshot(finished_run)
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(cfg)
    assert snapshot(finished_run) == before
