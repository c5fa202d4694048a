"""`bcos-clip demo`: settings, stage caching, verdicts, explanation figures; the quick demo end to end (slow)."""
from __future__ import annotations

import json
import re
import sys

import pytest
import torch
import yaml

from bcos_clip.apps.demo.config import DemoConfig
from bcos_clip.apps.demo.settings import ExplainSettings, load_settings
from bcos_clip.models.loading import deep_merge
from bcos_clip.apps.demo.explanations import explain_figures, parse_object, scene_from_objects, scene_images
from bcos_clip.apps.demo.report import check_targets, group_chance, retention
from bcos_clip.apps.demo.stages import StageRunner
from bcos_clip.runtime.hashing import file_digest


# --------------------------------------------------------------------------- settings


def test_settings_quick_and_arch_sections_are_merged():
    full = load_settings(DemoConfig())
    quick = load_settings(DemoConfig(quick=True))
    vit = load_settings(DemoConfig(arch="vit"))
    assert full.main_loss == "text_kd"
    assert quick.distill["steps"] < full.distill["steps"]
    assert quick.distill["lr"] == full.distill["lr"]  # untouched keys survive the merge
    assert vit.distill["lr"] != full.distill["lr"] or vit == full
    assert 0.5 < full.distill["crop_scale_min"] <= 1.0  # captions name positions: no small crops
    assert full.world.collage_share == 0.0 < vit.world.collage_share  # the RN world has no collages (issue 17)
    assert quick.pointing.n_grids < full.pointing.n_grids and quick.pointing.grid == full.pointing.grid


def test_deep_merge_replaces_leaves_and_keeps_the_rest():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    out = deep_merge(base, {"a": {"y": [3]}, "c": 4})
    assert out == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2}


@pytest.mark.parametrize("bad, match", [
    ({"distill": {"output": "x"}}, "set by the demo"),
    ({"pointing": {"grids": 3}}, "unknown key"),
    ({"extra": {}}, "unknown section"),
])
def test_settings_errors_name_the_key(tmp_path, bad, match):
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(KeyError, match=match):
        load_settings(DemoConfig(settings=str(path)))


def test_config_rejects_unknown_arch_and_missing_settings_file(tmp_path):
    with pytest.raises(ValueError, match="--arch"):
        DemoConfig(arch="vgg")
    with pytest.raises(FileNotFoundError, match="--settings"):
        load_settings(DemoConfig(settings=str(tmp_path / "nope.yaml")))


def test_cli_parses_demo_flags():
    from bcos_clip.cli import build_parser

    args = build_parser().parse_args(["demo", "--out", "x", "--quick", "--arch", "vit", "--seed", "3",
                                      "--compare-losses"])
    assert (args.output, args.quick, args.arch, args.seed, args.compare_losses) == ("x", True, "vit", 3, True)
    default = build_parser().parse_args(["demo"])
    assert default.output == "demo_out" and not default.compare_losses


# --------------------------------------------------------------------------- stages


def test_stage_runs_once_reuses_and_reruns_on_new_arguments(tmp_path):
    runner = StageRunner(tmp_path)
    calls = []
    folder = tmp_path / "work"

    def work():
        calls.append(1)
        folder.mkdir(exist_ok=True)
        (folder / f"file{len(calls)}").write_text("x")
        return {"n": len(calls), "t": (1, 2)}

    assert runner.run("s", {"a": 1}, work, clear=[folder]) == {"n": 1, "t": [1, 2]}
    assert StageRunner(tmp_path).run("s", {"a": 1}, work, clear=[folder]) == {"n": 1, "t": [1, 2]}
    assert len(calls) == 1
    assert runner.run("s", {"a": 2}, work, clear=[folder])["n"] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["file2"]  # the stale result was cleared
    assert [t.cached for t in runner.timings] == [False, False]


def test_stage_interrupted_marker_runs_again(tmp_path):
    runner = StageRunner(tmp_path)
    runner.marker("s").parent.mkdir(parents=True)
    runner.marker("s").write_text(json.dumps({"version": 1, "status": "running", "args": {"a": 1}}))
    assert runner.run("s", {"a": 1}, lambda: {"ok": True}) == {"ok": True}
    assert json.loads(runner.marker("s").read_text())["status"] == "complete"


def test_file_digest_changes_with_content(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.bin").write_bytes(b"abc")
    first = file_digest(tmp_path / "d")
    (tmp_path / "d" / "w.bin").write_bytes(b"abd")
    assert file_digest(tmp_path / "d") != first


# --------------------------------------------------------------------------- verdicts


def _summary(student_acc: float, pointing_student: float) -> dict:
    chance = {"shapes_natural": 0.0625, "shapes_count": 0.25}
    return {"chance": chance,
            "zeroshot": {"teacher": {"shapes_natural": 0.9, "shapes_count": 0.7}},
            "retention": {"student": {"natural": retention(student_acc, 0.9, 0.0625), "structured": 0.95}},
            "pointing": {"methods": {"bcos": {"mean": pointing_student},
                                     "gradcam": {"mean": 0.6}, "gradient": {"mean": 0.4}}}}


def test_retention_and_group_chance():
    assert retention(0.5, 0.9, 0.1) == pytest.approx(0.5)
    assert retention(0.5, 0.1, 0.1) is None  # a teacher at chance has nothing to keep
    assert group_chance({"a": 0.25, "b": 0.5, "c": 0.1}, {"a": "s", "b": "s", "c": "n"}) == {"s": 0.375, "n": 0.1}


def test_targets_are_checked_on_the_numbers():
    good = check_targets(_summary(0.89, 0.8))
    assert all(r["met"] for r in good)
    bad = {r["target"]: r["met"] for r in check_targets(_summary(0.5, 0.5))}
    assert not bad["student retention above chance, natural"]
    assert not bad["pointing game: student vs best post-hoc baseline on the teacher"]
    assert bad["teacher zero-shot, shapes_natural"] and bad["teacher zero-shot / chance, shapes_count"]
    weak = _summary(0.89, 0.8)
    weak["zeroshot"]["teacher"]["shapes_count"] = 0.4  # 1.6x chance
    assert not {r["target"]: r["met"] for r in check_targets(weak)}["teacher zero-shot / chance, shapes_count"]


def test_pointing_target_margin_from_the_settings():
    key = "pointing game: student vs best post-hoc baseline on the teacher"
    close = _summary(0.89, 0.63)  # 3 points above the best baseline (gradcam, 60 %)
    assert {r["target"]: r["met"] for r in check_targets(close)}[key]
    close["settings"] = {"pointing": {"target_margin": 0.05}}
    row = next(r for r in check_targets(close) if r["target"] == key)
    assert not row["met"] and "+ 5 points" in row["goal"]
    close["pointing"]["methods"]["bcos"]["mean"] = 0.65
    assert next(r for r in check_targets(close) if r["target"] == key)["met"]
    vit = load_settings(DemoConfig(arch="vit")).pointing
    assert vit.target_margin == 0.05 and load_settings(DemoConfig()).pointing.target_margin == 0.0


# --------------------------------------------------------------------------- explanations


def test_scene_objects_are_parsed_and_placed():
    assert parse_object("red circle@top left") == ("red", "circle", "top left")
    for bad in ("red circle", "pink circle@top left", "red cube@center", "red circle@middle"):
        with pytest.raises(ValueError, match="colour shape@where"):
            parse_object(bad)
    scene = scene_from_objects(["red circle@top left", "blue star@bottom right"], 64, 0, 0)
    (a, b) = scene.objects
    assert a.cx < 32 and a.cy < 32 and b.cx > 32 and b.cy > 32
    images = scene_images([["green star@center"], ["red circle@top left"]], 64, 0)
    assert images.shape == (2, 3, 64, 64) and 0 <= images.min() and images.max() <= 1


def test_explain_figures_are_complete_and_written(tiny_rn_bcos, tmp_path):
    settings = ExplainSettings(scenes=(("red circle@top left", "blue square@bottom right"), ("green star@center",)),
                               prompts=("red circle", "blue square", "green star"), templates=("a {}.",), cell=64)
    out = explain_figures(tiny_rn_bcos.eval(), tmp_path / "explanations", settings, seed=0)
    assert len(out["scores"]) == 2 and len(out["scores"][0]) == 3
    assert out["completeness"]["max_error_over_tolerance"] <= 1.0
    for rel in [out["files"]["colour"], out["files"]["heatmap"], *out["files"]["pairs"]]:
        assert (tmp_path / rel).is_file()


# --------------------------------------------------------------------------- the quick demo (slow)


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, monkeypatch):
    from bcos_clip.apps.demo.run import run_demo

    # as after `pip install -e .` alone: no extra (issue 15; scripts/check_bare_install.sh does it for real)
    for name in ("matplotlib", "matplotlib.pyplot", "transformers", "datasets", "fastapi", "uvicorn", "multipart"):
        monkeypatch.setitem(sys.modules, name, None)

    out = tmp_path / "demo"
    s = run_demo(DemoConfig(output=str(out), quick=True))
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) >= 7
    for rel in links:  # every embedded figure exists and is a PNG
        assert (out / rel).is_file() and (out / rel).read_bytes()[:4] == b"\x89PNG", rel
    for section in ("## Targets", "Grid pointing game", "## 6. Distillation", "--compare-losses",
                    "zeroshot_classification", "linear_probe"):
        assert section in report
    assert summary["explain"]["completeness"]["max_error_over_tolerance"] <= 1.0
    assert set(summary["pointing"]["methods"]) == {"bcos", "gradient", "input_x_gradient",
                                                   "integrated_gradients", "gradcam"}
    assert list(summary["students"]) == ["text_kd"]  # the main path distils one student
    assert not any(t["name"].startswith(("distill_siglip", "distill_cosine")) for t in s["timing"]["stages"])
    for ds, acc in summary["zeroshot"]["teacher"].items():
        assert 0.0 <= acc <= 1.0, ds
    from bcos_clip import load

    assert load(summary["students"]["text_kd"]["checkpoint"]).is_bcos
    # A second run reuses every stage and leaves the user's own files in the demo folder alone.
    (out / "my_notes.md").write_text("mine\n")
    again = run_demo(DemoConfig(output=str(out), quick=True))
    assert (out / "my_notes.md").read_text() == "mine\n"
    assert all(t["cached"] for t in again["timing"]["stages"] if t["name"] not in ("world", "teacher"))
    assert again["zeroshot"] == s["zeroshot"]
    # Again with --compare-losses: every stage of the first run is reused, two more students are trained.
    again2 = run_demo(DemoConfig(output=str(out), quick=True, compare_losses=True))
    reran = {t["name"] for t in again2["timing"]["stages"] if not t["cached"]}
    assert {"distill_siglip", "distill_cosine", "pointing_losses"} <= reran
    assert not reran & {"world", "teacher", "bcosify", "distill_text_kd", "eval_teacher", "eval_student",
                        "explain", "pointing"}
    assert again2["zeroshot"]["student"] == s["zeroshot"]["student"]
    assert {r["loss"] for r in again2["compare"]["rows"] if r.get("loss")} == {"text_kd", "siglip", "cosine"}
    assert set(again2["pointing_losses"]["methods"]) == {"student", "student_siglip", "student_cosine"}
    assert "Three distillation losses" in (out / "report.md").read_text()


def test_timed_stage_notices_reuse_by_its_output_file(tmp_path):
    runner = StageRunner(tmp_path)
    out = tmp_path / "w.json"

    def build(write: bool):
        if write or not out.exists():
            out.write_text("x")
        return 7

    assert runner.timed("world", lambda: build(True), output=out) == 7
    assert runner.timed("world", lambda: build(False), output=out) == 7
    first, second = runner.timings
    assert not first.cached and second.cached
    assert (second.wall_s, second.cpu_s) == (first.wall_s, first.cpu_s)  # the times of the run that built it


def test_paired_difference_on_the_same_grids():
    from bcos_clip.apps.demo.pointing import paired
    from bcos_clip.explain.pointing import PointingGameResult

    def result(scores):
        t = torch.tensor(scores)
        return PointingGameResult(scores=t, classes=torch.zeros_like(t, dtype=torch.long), classnames=["a"],
                                  method="m", grid=2, size=64, smooth=9, n_candidates=8)

    d = paired(result([[1.0, 1.0], [0.5, 0.5], [0.2, 0.2]]), result([[0.5, 0.5], [0.5, 0.5], [0.4, 0.4]]))
    assert d["mean"] == pytest.approx((0.5 + 0.0 - 0.2) / 3)
    assert d["wins"] == pytest.approx(1 / 3)
    assert d["sem"] > 0


def test_report_models_section_names_the_main_loss_student():
    """A demo whose main student is not text_kd (settings' distill.loss) reports that student (the
    section read students["text_kd"] and raised KeyError)."""
    from bcos_clip.apps.demo.report import _models

    zs = {"shapes_natural": 0.9}
    s = {"teacher": {"steps": 10, "batch_size": 8, "final_loss": 1.0}, "main_loss": "cosine",
         "students": {"cosine": {"loss": "cosine", "steps": 5, "final_loss": 0.1}},
         "zeroshot": {"teacher": zs, "bcosified": {}, "student": {"shapes_natural": 0.8}},
         "chance": {"shapes_natural": 0.0625}, "world": {"groups": {"shapes_natural": "natural"}},
         "config": {"arch": "vit"}}
    text = "\n".join(_models(s))
    assert "`cosine` loss (5 steps" in text
