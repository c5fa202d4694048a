"""Missing extras (issue 15): every command checks its optional dependencies before any work and stops with
one line naming the extra, or degrades (the demo's and the report's charts fall back to Pillow).

A missing package is simulated with ``sys.modules[name] = None`` (import and ``find_spec`` both see it
as absent); each command's ``run`` is replaced by one that fails the test, so "before any work" is checked.
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from bcos_clip.runtime import extras
from bcos_clip.runtime.extras import EXTRAS, MissingExtra, available, install_hint, missing, require

ROOT = Path(__file__).resolve().parents[1]


def hide(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_extras_match_pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {k: v for k, v in data["project"]["optional-dependencies"].items() if k != "test"}
    assert set(declared) == set(EXTRAS)
    to_module = {v: k for k, v in extras.DISTRIBUTION_NAMES.items()}
    for extra, requirements in declared.items():
        dists = [re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in requirements]
        assert {to_module.get(d, d.replace("-", "_")) for d in dists} == set(EXTRAS[extra]), extra


def test_require_names_the_extra_and_the_pip_command(monkeypatch):
    if available("plot"):
        require("plot", "x")  # installed: no error
    hide(monkeypatch, "matplotlib")
    assert missing("plot") == ["matplotlib"] and not available("plot")
    with pytest.raises(MissingExtra) as err:
        require("plot", "the chart")
    assert str(err.value) == ("the chart needs the 'plot' extra (matplotlib is not installed): "
                              "pip install 'bcos_clip[plot]'")
    assert install_hint("hf") == "pip install 'bcos_clip[hf]'"
    with pytest.raises(KeyError, match="unknown extra 'plots'"):
        require("plots")


def test_every_subcommand_declares_its_optional_dependencies():
    from bcos_clip.cli import SUBCOMMANDS
    from bcos_clip.cli.preflight import NEEDS

    assert set(NEEDS) == set(SUBCOMMANDS)


@pytest.fixture
def hf_clip_dir(tmp_path):
    folder = tmp_path / "hf_clip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    return folder


def _cases(tmp_path, hf_dir):
    out = str(tmp_path / "out")
    return {
        "serve": (["serve", "--model", str(tmp_path)], ["fastapi"], "needs the 'serve' extra (fastapi is not"),
        "eval hf dataset": (["eval", "--dataset", "wds/a", "hf:/data/pets", "--model", "RN50", "--output",
                             out], ["datasets"], "dataset hf:/data/pets needs the 'hf' extra (datasets is not"),
        "eval hf model": (["eval", "--dataset", "wds/a", "--model", str(hf_dir), "--output", out],
                          ["transformers"], f"--model {hf_dir} (a transformers CLIP folder) needs the 'hf' extra"),
        "bcosify": (["bcosify", "--model", str(hf_dir), "--output", out], ["transformers", "datasets"],
                    "(transformers, datasets are not installed): pip install 'bcos_clip[hf]'"),
        "explain": (["explain", "--model", str(hf_dir), "--image", "a.png", "--prompt", "a", "--output", out],
                    ["transformers"], "needs the 'hf' extra"),
        "train": (["train", "--model", str(hf_dir), "--train-data", "x", "--output", out, "--steps", "1"],
                  ["transformers"], f"--model {hf_dir} (a transformers CLIP folder) needs the 'hf' extra"),
    }


@pytest.mark.parametrize("case", ["serve", "eval hf dataset", "eval hf model", "bcosify", "explain", "train"])
def test_commands_stop_before_work_with_one_line(case, tmp_path, hf_clip_dir, monkeypatch, capsys):
    import importlib

    from bcos_clip.cli import main

    argv, hidden, message = _cases(tmp_path, hf_clip_dir)[case]
    module = importlib.import_module(f"bcos_clip.cli.{argv[0]}")
    monkeypatch.setattr(module, "run", lambda args: pytest.fail(f"{argv[0]} started its work"))
    hide(monkeypatch, *hidden)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bcos-clip {argv[0]}: error: ") and message in err, err
    assert "pip install 'bcos_clip[" in err


def test_commands_run_when_their_extras_are_there(tmp_path, hf_clip_dir, monkeypatch):
    from bcos_clip.cli import main
    from bcos_clip.cli import serve as serve_cli

    if not available("serve"):
        pytest.skip("the serve extra is not installed")
    ran = []
    monkeypatch.setattr(serve_cli, "run", lambda args: ran.append(args.model) or 0)
    assert main(["serve", "--model", str(tmp_path)]) == 0 and ran == [str(tmp_path)]


def test_demo_and_report_need_no_extra(tmp_path, monkeypatch):
    from bcos_clip.cli import main
    from bcos_clip.cli import demo as demo_cli
    from bcos_clip.cli import report as report_cli

    hide(monkeypatch, "matplotlib", "transformers", "datasets", "fastapi", "uvicorn", "multipart")
    ran = []
    monkeypatch.setattr(demo_cli, "run", lambda args: ran.append("demo") or 0)
    monkeypatch.setattr(report_cli, "run", lambda args: ran.append("report") or 0)
    assert main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    assert main(["report", str(tmp_path)]) == 0
    assert ran == ["demo", "report"]


def test_demo_charts_fall_back_to_pillow_without_matplotlib(tmp_path, monkeypatch):
    from bcos_clip.apps.demo.figures import loss_chart, loss_curves, pointing_chart
    from bcos_clip.evaluation.plot import bar_chart, default_backend

    hide(monkeypatch, "matplotlib", "matplotlib.pyplot")
    assert default_backend() == "pillow"
    methods = {"bcos": {"mean": 0.6, "sem": 0.02, "model": "student", "label": "B-cos (student)"},
               "gradcam": {"mean": 0.5, "sem": 0.03, "model": "teacher", "label": "gradcam (teacher)"}}
    groups = {"teacher": {"natural": 0.9, "structured": 0.6}, "student": {"natural": 0.85, "structured": None}}
    curves = {"text_kd": [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.5}], "cosine": []}
    paths = [pointing_chart(methods, tmp_path / "p.png", 0.25),
             loss_chart(groups, {"natural": 0.0625, "structured": 0.25}, tmp_path / "l.png"),
             loss_curves(curves, tmp_path / "c.png"),
             bar_chart({"zeroshot": {"natural": {"teacher": 0.9}}}, tmp_path / "b.png")]
    for path in paths:  # written without matplotlib (an import of it would have raised)
        assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("backend", ["matplotlib", "pillow"])
def test_demo_charts_with_either_backend(tmp_path, backend):
    from PIL import Image

    from bcos_clip.apps.demo.figures import loss_chart, pointing_chart

    if backend == "matplotlib" and not available("plot"):
        pytest.skip("the plot extra is not installed")

    methods = {m: {"mean": v, "sem": 0.01, "model": "teacher"} for m, v in (("a", 0.3), ("b", 0.7))}
    for path in (pointing_chart(methods, tmp_path / "p.png", 0.25, backend=backend),
                 loss_chart({"x": {"g": 0.5}}, {"g": 0.1}, tmp_path / "l.png", backend=backend)):
        with Image.open(path) as img:
            assert img.width > 200 and img.height > 80
