"""Nothing lost in a demo folder: `demo --out` refuses a non-empty folder it did not make (the user's
`bcosified/`, `students/...`, `report.md` survive), and a stage that fails leaves its previous result
(folder and marker) as it was."""
from __future__ import annotations

import json

import pytest

from bcos_clip.apps.demo.folder import MARKER, DemoFolderError, claim_demo_folder, made_by_demo
from bcos_clip.apps.demo.stages import StageRunner
from bcos_clip.cli import main
from tests.test_safety_run_folder import snapshot


@pytest.fixture
def no_demo_work(monkeypatch):
    import bcos_clip.apps.demo.run as demo

    def started(*args, **kwargs):
        raise AssertionError("the demo started working")

    monkeypatch.setattr(demo, "_world", started)


def _users_folder(root):
    """What a user may keep in a folder: names the demo also writes."""
    for rel, text in {"bcosified/model.safetensors": "weights", "students/text_kd/notes.txt": "n",
                      "explanations/a.png": "png", "pointing/p.json": "{}", "report.md": "# mine\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, no_demo_work, capsys):
    folder = _users_folder(tmp_path / "mine")
    before = snapshot(folder)
    capsys.readouterr()
    assert main(["--log-level", "WARNING", "demo", "--quick", "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not made by bcos-clip demo" in err and str(folder) in err, err
    assert snapshot(folder) == before


def test_claim_new_empty_own_and_earlier_demo_folders(tmp_path):
    new = claim_demo_folder(tmp_path / "a" / "new")
    assert (new / MARKER).is_file() and made_by_demo(new)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim_demo_folder(empty) / MARKER).is_file()
    (new / "report.md").write_text("# demo report\n")
    assert claim_demo_folder(new) == new  # its own folder: reused
    old = tmp_path / "old"  # written by a demo before the marker existed
    (old / "stages").mkdir(parents=True)
    (old / "stages" / "world.json").write_text(json.dumps({"version": 1, "status": "complete"}))
    (old / "report.md").write_text("# demo report\n")
    assert (claim_demo_folder(old) / MARKER).is_file()
    foreign = tmp_path / "foreign"
    (foreign / "stages").mkdir(parents=True)
    (foreign / "stages" / "plan.json").write_text('{"my": "stage plan"}')
    with pytest.raises(DemoFolderError):
        claim_demo_folder(foreign)
    assert not (foreign / MARKER).exists()


def test_a_demo_folder_survives_a_failing_demo(tmp_path, no_demo_work, capsys):
    folder = claim_demo_folder(tmp_path / "demo")
    runner = StageRunner(folder)
    runner.run("bcosify", {"b": 2.0}, lambda: (folder / "bcosified").mkdir() or {"ok": 1},
               clear=[folder / "bcosified"])
    (folder / "bcosified" / "model.safetensors").write_text("weights")
    before = snapshot(folder)
    capsys.readouterr()
    assert main(["--log-level", "WARNING", "demo", "--out", str(folder), "--settings", str(tmp_path / "no.yaml")]) == 2
    assert snapshot(folder) == before


@pytest.mark.parametrize("failure", [RuntimeError("training diverged"), KeyboardInterrupt()])
def test_a_failed_stage_keeps_the_previous_result(tmp_path, failure):
    runner = StageRunner(tmp_path)
    folder = tmp_path / "students" / "text_kd"

    def work(text):
        def fn():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.txt").write_text(text)
            return {"model": text}
        return fn

    assert runner.run("distill", {"steps": 10}, work("first"), clear=[folder]) == {"model": "first"}
    marker = runner.marker("distill").read_text()

    def fails():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.txt").write_text("half written")
        raise failure

    with pytest.raises(type(failure)):
        runner.run("distill", {"steps": 20}, fails, clear=[folder])
    assert (folder / "model.txt").read_text() == "first" and runner.marker("distill").read_text() == marker
    assert sorted(p.name for p in folder.parent.iterdir()) == ["text_kd"]  # nothing left aside
    assert runner.run("distill", {"steps": 10}, work("unused"), clear=[folder]) == {"model": "first"}  # reused
    assert runner.run("distill", {"steps": 20}, work("second"), clear=[folder]) == {"model": "second"}
    assert sorted(p.name for p in folder.parent.iterdir()) == ["text_kd"]
    assert (folder / "model.txt").read_text() == "second"
