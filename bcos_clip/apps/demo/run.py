"""``bcos-clip demo``: the whole pipeline, offline, on a CPU, in minutes.

world (``build_world``) -> teacher (``pretrain_teacher``) -> B-cosified tower (``bcosify``, saved) ->
student (``train``, default loss text_kd) -> evaluation of teacher, B-cosified tower and student on the
demo suite (zero-shot, linear probe, retrieval) -> explanations (scenes x prompts) -> grid pointing game
(student vs post-hoc baselines on the teacher) -> ``report.md``, figures and ``summary.json`` in the
output folder. With ``compare_losses`` (``--compare-losses``) two more students (settings' ``compare``
losses, siglip and cosine) are distilled and compared on zero-shot and the pointing game.

Settings are data (``configs/demo.yaml``, read once into ``settings.DemoSettings``); every stage is cached
(``stages``), so a second run reuses the world, the teacher and all finished stages.

Example::

    summary = run_demo(DemoConfig(output="demo_out", quick=True))
    summary["targets"]
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

import torch

from bcos_clip.apps.demo.config import DemoConfig
from bcos_clip.apps.demo.evaluate import DemoModel, evaluate_model, group_means, suite_for
from bcos_clip.apps.demo.explanations import explain_figures
from bcos_clip.apps.demo.figures import loss_chart, loss_curves, pointing_chart, world_samples
from bcos_clip.apps.demo.settings import DemoSettings, as_dict, load_settings
from bcos_clip.apps.demo.folder import claim_demo_folder
from bcos_clip.apps.demo.pointing import pointing_game, students_game
from bcos_clip.apps.demo.report import check_targets, group_chance, retention, write_report
from bcos_clip.apps.demo.stages import StageRunner, cpu_seconds
from bcos_clip.apps.demo.training import distill_config, distill_stage, teacher_log, teacher_paths
from bcos_clip.data.shapes.world import task_classnames
from bcos_clip.data.shapes.writer import WorldPaths, build_world
from bcos_clip.data.stream.calibration import calibration_batches
from bcos_clip.evaluation import build_report
from bcos_clip.evaluation.plot import default_backend
from bcos_clip.models import bcosify, load_clip, recalibrate_batchnorm, resolve_model, save
from bcos_clip.nn.norms import UncenteredBatchNorm2d
from bcos_clip.runtime.hashing import file_digest
from bcos_clip.runtime.runfiles import RESULTS_DIR, SUMMARY, WORLD_MARKER, read_metrics, world_args
from bcos_clip.runtime.threads import set_threads, wait_policy

log = logging.getLogger(__name__)

ZERO_SHOT = "zeroshot_classification"
CALIBRATION = (10, 32)  # BatchNorm refit of the B-cosified column: batches x images


def _world(cfg: DemoConfig, settings: DemoSettings, out: Path) -> WorldPaths:
    w = settings.world
    return build_world(out / "world", quick=cfg.quick, seed=cfg.seed, n_train=w.n_train,
                       n_eval_per_class=w.n_eval_per_class, image_size=w.image_size, collage_share=w.collage_share)


def _bcosified(runner: StageRunner, teacher: Dict[str, str], world: WorldPaths, out: Path,
               settings: DemoSettings) -> Dict[str, Any]:
    """The teacher's B-cosified tower before any training (the students' conversion settings), its
    BatchNorm statistics refitted on CALIBRATION = (batches, batch size) training images (without, B = 2
    shrinks RN embeddings to 0), saved as a checkpoint (a report column)."""
    folder = out / "bcosified"
    student = settings.train_config(model=teacher["model"], train_data=world.train_shards, output=str(folder))
    spec = {"b": student.bcos_b, "bias": student.bcos_bias, "qk": student.bcos_qk,
            "layernorm": student.bcos_layernorm, "positional": student.bcos_positional,
            "positional_scale": student.bcos_positional_scale}

    def work() -> Dict[str, Any]:
        clip, _, _ = load_clip(teacher["model"], teacher["pretrained"])
        model = bcosify(clip, **spec)
        if any(isinstance(m, UncenteredBatchNorm2d) for m in model.modules()):
            recalibrate_batchnorm(model, calibration_batches(world.train_shards, model.preprocess, CALIBRATION[1]),
                                  CALIBRATION[0])
        save(model, folder)
        r = model.report
        return {"checkpoint": str(folder), "digest": file_digest(folder), "replaced": len(r.replaced),
                "removed": [list(x) for x in r.removed], "unconverted": [list(x) for x in r.unconverted]}

    return runner.run("bcosify", {"teacher": teacher["digest"], **spec, "calibration": list(CALIBRATION)}, work,
                      clear=[folder])


def _students(runner: StageRunner, cfg: DemoConfig, settings: DemoSettings, world: WorldPaths,
              teacher: Dict[str, str], out: Path) -> Dict[str, Dict[str, Any]]:
    """The main student (settings' loss) and, with ``cfg.compare_losses``, one per comparison loss;
    {loss: stage result}."""
    main = settings.main_loss
    students = {main: distill_stage(runner, f"distill_{main}", distill_config(
        world, teacher, out / "students" / main, settings, cfg.seed, cfg.device), teacher["digest"])}
    for loss in settings.compare.losses if cfg.compare_losses else ():
        if loss == main:
            continue
        c = distill_config(world, teacher, out / "students" / loss, settings, cfg.seed, cfg.device,
                           loss=loss, steps=settings.compare.steps)
        students[loss] = distill_stage(runner, f"distill_{loss}", c, teacher["digest"])
    return students


def _demo_models(teacher: Dict[str, str], bcosified: Dict[str, Any], students: Dict[str, Dict[str, Any]],
                 main: str) -> List[DemoModel]:
    models = [DemoModel("teacher", teacher["model"], teacher["pretrained"], teacher["digest"], "teacher"),
              DemoModel("student", students[main]["checkpoint"], None, students[main]["digest"], "student"),
              DemoModel("bcosified", bcosified["checkpoint"], None, bcosified["digest"], "bcosified")]
    models += [DemoModel(f"student_{loss}", s["checkpoint"], None, s["digest"], "student")
               for loss, s in students.items() if loss != main]
    return models


def _evaluate(runner: StageRunner, models: List[DemoModel], world: WorldPaths, settings: DemoSettings,
              out: Path, device: str) -> Dict[str, Dict[str, Any]]:
    """Teacher and main student on the whole suite; the others on zero-shot classification only."""
    full = suite_for(settings.eval.suite)
    zero_shot = suite_for(settings.eval.suite, [ZERO_SHOT])
    return {m.label: evaluate_model(runner, out / "eval", m, world, full if m.label in ("teacher", "student")
                                    else zero_shot, settings.eval, device) for m in models}


def _zeroshot_table(results: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """{label: {dataset: zero-shot top-1}}."""
    return {label: {ds: row["metrics"].get("acc1") for ds, row in r.get(ZERO_SHOT, {}).items()}
            for label, r in results.items()}


def _compare_rows(results: Dict[str, Dict[str, Any]], students: Dict[str, Dict[str, Any]], main: str,
                  chance: Dict[str, float], timings: Dict[str, float],
                  pointing: Dict[str, Any]) -> List[Dict[str, Any]]:
    teacher = group_means(results["teacher"], ZERO_SHOT)
    rows = [{"label": "teacher (plain CLIP)", "groups": teacher}]
    rows.append({"label": "B-cosified, not distilled", "groups": group_means(results["bcosified"], ZERO_SHOT),
                 "retention": {g: retention(v, teacher[g], chance[g]) for g, v in
                               group_means(results["bcosified"], ZERO_SHOT).items()}})
    for loss, s in students.items():
        label = "student" if loss == main else f"student_{loss}"
        means = group_means(results[label], ZERO_SHOT)
        rows.append({"label": f"B-cos student ({loss})", "loss": loss, "steps": s["steps"], "groups": means,
                     "final_loss": s.get("final_loss"),
                     "train_cpu_min": timings.get(f"distill_{loss}", 0.0) / 60 or None,
                     "pointing": (pointing.get("methods", {}).get(label) or {}).get("mean"),
                     "retention": {g: retention(v, teacher[g], chance[g]) for g, v in means.items()}})
    return rows


def _figures(out: Path, world: WorldPaths, cfg: DemoConfig, s: Dict[str, Any]) -> None:
    fig = out / "figures"
    samples = world_samples(cfg.seed, world.image_size, fig / "world_samples.png",
                            collage_share=s["world"]["collage_share"])
    s["files"]["world_samples"] = f"figures/{samples.name}"
    if s["pointing"]["methods"]:
        chance_pg = next(iter(s["pointing"]["methods"].values()))["chance"]
        chart = pointing_chart(s["pointing"]["methods"], fig / "pointing.png", chance_pg)
        s["pointing"]["files"]["chart"] = f"figures/{chart.name}"
    rows = {r["label"]: r["groups"] for r in s["compare"]["rows"]}
    s["compare"]["files"] = {"curves": f"figures/{loss_curves(s['compare']['curves'], fig / 'loss_curves.png').name}"}
    if len(s["students"]) > 1:
        s["compare"]["files"]["chart"] = \
            f"figures/{loss_chart(rows, s['compare']['chance'], fig / 'loss_comparison.png').name}"


def _explain_and_point(runner: StageRunner, cfg: DemoConfig, settings: DemoSettings, world: WorldPaths,
                       models: List[DemoModel], out: Path) -> Dict[str, Any]:
    teacher_m, student_m = models[0], models[1]
    students = [m for m in models if m.kind == "student"]
    explain_args = {"student": student_m.digest, "settings": as_dict(settings.explain), "seed": cfg.seed}
    game = settings.pointing
    point_args = {"student": student_m.digest, "teacher": teacher_m.digest, "settings": game.game(),
                  "seed": cfg.seed, "world": str(world.root)}
    loaded: Dict[str, Any] = {}

    def get(m: DemoModel) -> Any:
        if m.label not in loaded:
            loaded[m.label] = resolve_model(m.model, m.pretrained).to(cfg.device).eval()
        return loaded[m.label]

    explained = runner.run("explain", explain_args, lambda: explain_figures(
        get(student_m), out / "explanations", settings.explain, cfg.seed), clear=[out / "explanations"])
    pointed = runner.run("pointing", point_args, lambda: pointing_game(
        get(student_m), get(teacher_m), world, out / "pointing", game, cfg.seed),
        clear=[out / "pointing"])
    if len(students) > 1:
        per_loss = runner.run("pointing_losses", {**point_args, "students": [m.digest for m in students]},
                              lambda: students_game({m.label: get(m) for m in students}, get(teacher_m), world,
                                                    game, cfg.seed))
    else:  # one student: its score is the one of section 5
        per_loss = {"methods": {"student": pointed["methods"]["bcos"]}} if pointed["methods"] else \
            {"skipped": pointed.get("skipped", "not played"), "methods": {}}
    return {"explain": explained, "pointing": pointed, "pointing_losses": per_loss}


def _machine() -> Dict[str, Any]:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "omp_wait_policy": wait_policy(),
            "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def _summary(cfg: DemoConfig, settings: DemoSettings, world: WorldPaths, teacher: Dict[str, str],
             students: Dict[str, Dict[str, Any]], results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    main = settings.main_loss
    groups = dict(world.groups)
    chance = {ds: 1.0 / len(task_classnames(ds)) for ds in world.tasks}
    g_chance = group_chance(chance, groups)
    zs = _zeroshot_table(results)
    teacher_g, student_g = group_means(results["teacher"], ZERO_SHOT), group_means(results["student"], ZERO_SHOT)
    built = world_args(world.root)  # the arguments the world was built with (its marker)
    return {"config": asdict(cfg), "settings": as_dict(settings), "machine": _machine(),
            "world": {"root": str(world.root), "n_train": world.n_train, "groups": groups,
                      "n_eval_per_class": built.get("n_eval_per_class"),
                      "image_size": world.image_size, "seed": world.seed,
                      "collage_share": built.get("collage_share", 0.0)},
            "teacher": {**teacher, **teacher_log(teacher)}, "students": students, "chance": chance,
            "zeroshot": zs, "eval": results,
            "retention": {"student": {g: retention(student_g.get(g), teacher_g.get(g), c)
                                      for g, c in g_chance.items()}},
            "group_means": {label: group_means(r, ZERO_SHOT) for label, r in results.items()},
            "compare": {"chance": g_chance, "steps": settings.compare.steps,
                        "curves": {loss: read_metrics(Path(s["checkpoint"]).parents[1])
                                   for loss, s in students.items()}},
            "files": {}, "main_loss": main}


def run_demo(cfg: DemoConfig) -> Dict[str, Any]:
    """Run (or resume) the demo into ``cfg.output``; returns the summary also written to summary.json."""
    settings = load_settings(cfg)
    log.info("demo: %d torch threads on %s CPU cores (OpenMP wait policy: %s)", set_threads(cfg.threads),
             os.cpu_count(), wait_policy())
    if default_backend() == "pillow":
        log.info("demo: matplotlib (the 'plot' extra) is not installed: charts are drawn with Pillow "
                 "(pip install 'bcos_clip[plot]' for matplotlib's)")
    out = claim_demo_folder(Path(cfg.output))  # only a new, empty or demo-made folder
    runner, wall0, cpu0 = StageRunner(out), time.perf_counter(), cpu_seconds()
    world = runner.timed("world", lambda: _world(cfg, settings, out), output=out / "world" / WORLD_MARKER)
    teacher = runner.timed("teacher", lambda: teacher_paths(world, out / "teacher", cfg.arch, settings.teacher,
                                                             cfg.seed, cfg.quick),
                           output=out / "teacher" / f"teacher_{cfg.arch}.pt")
    bcosified = _bcosified(runner, teacher, world, out, settings)
    students = _students(runner, cfg, settings, world, teacher, out)
    main = settings.main_loss
    models = _demo_models(teacher, bcosified, students, main)
    results = _evaluate(runner, models, world, settings, out, cfg.device)
    s = _summary(cfg, settings, world, teacher, students, results)
    s.update(_explain_and_point(runner, cfg, settings, world, models, out))
    stage_cpu = {t.name: t.cpu_s for t in runner.timings}
    s["compare"]["rows"] = _compare_rows(results, students, main, s["compare"]["chance"], stage_cpu,
                                         s["pointing_losses"])
    rep = build_report(out / "eval" / RESULTS_DIR, out / "eval", models=["teacher", "student"])
    s["eval_report"] = {"markdown": rep.markdown.read_text(encoding="utf-8"), "csv": "eval/report.csv",
                        "plot": f"eval/{rep.plot.name}", "results_dir": str(out / "eval" / RESULTS_DIR)}
    _figures(out, world, cfg, s)
    s["targets"] = check_targets(s)
    s["timing"] = {"wall_s": round(time.perf_counter() - wall0, 2), "cpu_s": round(cpu_seconds() - cpu0, 2),
                   "stages": [asdict(t) for t in runner.timings]}
    write_report(s, out)
    (out / SUMMARY).write_text(json.dumps(s, indent=1, default=str))
    log.info("demo: wrote %s and %s in %.1f min", out / "report.md", out / SUMMARY, s["timing"]["wall_s"] / 60)
    return s
