"""The demo's grid pointing game: the B-cos student's contributions against post-hoc attributions
(Gradient, Input x Gradient, Integrated Gradients, GradCAM) on its plain teacher, on the same grids.

Both models must classify every image of a grid correctly and confidently (``select_with``), so the
pool, and with one seed the grids, are the same for every method. Output: a JSON-able summary per
method (mean, std, per-grid scores) and ``examples.png`` (one grid, a row of maps per method).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from PIL import Image

from bcos_clip.apps.demo.settings import PointingSettings
from bcos_clip.data.readers.wds import open_wds_benchmark
from bcos_clip.data.shapes.writer import WorldPaths
from bcos_clip.explain.pointing import PointingGameResult, collect_confident, grid_pointing_game, select_confident
from bcos_clip.explain.pointing_report import example_picture
from bcos_clip.explain.prompts import prompt_embeddings
from bcos_clip.explain.sheet import captioned, vstack
from bcos_clip.explain.visualize import save_png

log = logging.getLogger(__name__)

STUDENT_METHOD = "bcos"


def confident_pool(model: torch.nn.Module, world: WorldPaths, settings: PointingSettings) -> Dict[str, Any]:
    """Read the pointing dataset's test split and keep up to ``per_class`` images per class that
    ``model`` classifies correctly and confidently. Returns {"pool": {class: (M, 3, H, W) uint8},
    "classnames", "templates"}; the teacher's confidence is checked later by the game itself."""
    name = settings.dataset
    bench = open_wds_benchmark(name, str(world.wds_root / "{dataset}"))
    if bench.kind != "classification":
        raise ValueError(f"demo settings 'pointing': dataset {name!r} is {bench.kind}, not classification")
    device = next(model.parameters()).device
    text = prompt_embeddings(model, bench.classnames, bench.templates, device)
    pool = collect_confident(model, bench.torch_dataset("test", model.preprocess), text, settings.per_class,
                             threshold=settings.threshold)
    return {"pool": pool, "classnames": list(bench.classnames), "templates": list(bench.templates),
            "dataset": name}


def joint_pool(data: Dict[str, Any], models: Sequence[torch.nn.Module], threshold: float) -> Dict[int, torch.Tensor]:
    """The pool's images that every model classifies correctly and confidently, by class (empty classes
    dropped); the game selects the same way, so this tells beforehand whether a grid can be drawn."""
    out = {}
    for c, images in data["pool"].items():
        keep = torch.ones(len(images), dtype=torch.bool)
        for m in models:
            device = next(m.parameters()).device
            text = prompt_embeddings(m, data["classnames"], data["templates"], device)
            keep &= select_confident(m, images, torch.full((len(images),), c), text, threshold)
        if bool(keep.any()):
            out[c] = images[keep]
    return out


def _restrict(data: Dict[str, Any], models: Sequence[torch.nn.Module], settings: PointingSettings) -> str:
    """Keep the pool images every model classifies correctly and confidently; a reason ("" if none)
    why no grid can be drawn from what is left."""
    grid = settings.grid
    data["pool"] = joint_pool(data, models, settings.threshold)
    if len(data["pool"]) >= grid * grid:
        return ""
    reason = (f"only {len(data['pool'])} classes of {data['dataset']} have test images that all "
              f"{len(models)} models classify correctly and confidently; a {grid}x{grid} grid needs {grid * grid}")
    log.warning("pointing game skipped: %s", reason)
    return reason


def _play(model: torch.nn.Module, others: Sequence[torch.nn.Module], data: Dict[str, Any], method: str,
          settings: PointingSettings, seed: int) -> PointingGameResult:
    return grid_pointing_game(model, data["pool"], data["classnames"], data["templates"], grid=settings.grid,
                              n_grids=settings.n_grids, seed=seed, method=method, threshold=settings.threshold,
                              select_with=list(others), n_examples=settings.n_examples)


def _summary(result: PointingGameResult, model: str) -> Dict[str, Any]:
    d = result.as_dict()
    n = max(int(result.scores.numel()), 1)
    return {"model": model, "method": result.method, "mean": d["mean"], "std": d["std"], "median": d["median"],
            "sem": d["std"] / n ** 0.5, "n_grids": d["n_grids"], "n_cells": int(result.scores.numel()),
            "grid": d["grid"], "image_size": d["image_size"], "smooth": d["smooth"], "chance": d["chance"],
            "n_candidates": d["n_candidates"],
            "per_grid_mean": [round(g["mean"], 6) for g in d["per_grid"]]}


def paired(student: PointingGameResult, other: PointingGameResult) -> Dict[str, float]:
    """Student minus ``other`` on the same grids: mean of the per-grid differences, its standard error,
    and the share of grids the student wins."""
    d = (student.scores.double().mean(1) - other.scores.double().mean(1))
    n = d.numel()
    sem = float(d.std() / n ** 0.5) if n > 1 else 0.0
    return {"mean": float(d.mean()), "sem": sem, "wins": float((d > 0).double().mean())}


def examples_figure(results: Sequence[PointingGameResult], labels: Sequence[str], path: Path,
                    index: int = 0) -> Path:
    """One grid, one row per method: [grid | map of each cell's class, its cell outlined, score]."""
    rows: List[Image.Image] = []
    for result, label in zip(results, labels):
        if len(result.examples) <= index:
            continue
        pic = example_picture(result.examples[index], result.classnames, result.grid, result.smooth, panel=150)
        rows.append(captioned(pic, [label], size=15))
    if not rows:
        raise ValueError("pointing game: no example grids to draw")
    return save_png(vstack(rows, gap=10), path)


def pointing_game(student: torch.nn.Module, teacher: torch.nn.Module, world: WorldPaths, out_dir: Path,
                  settings: PointingSettings, seed: int) -> Dict[str, Any]:
    """Play the game for the student (B-cos contributions) and for every baseline on the teacher.

    Returns {"dataset", "methods": {name: summary}, "files": {"examples": ...}}; method names are
    ``bcos (student)`` style labels in ``label`` fields, keys are the attribution names.
    """
    data = confident_pool(student, world, settings)
    reason = _restrict(data, [student, teacher], settings)
    if reason:
        return {"dataset": data["dataset"], "skipped": reason, "methods": {}, "files": {}}
    baselines = list(settings.baselines)
    results, labels, methods = [], [], {}
    res = _play(student, [teacher], data, STUDENT_METHOD, settings, seed)
    results.append(res)
    labels.append("B-cos contributions (student)")
    methods[STUDENT_METHOD] = {**_summary(res, "student"), "label": labels[-1]}
    for name in baselines:
        res = _play(teacher, [student], data, name, settings, seed)
        if not torch.equal(res.classes, results[0].classes):
            raise RuntimeError(f"pointing game: {name} drew other grids than the student (selection differs)")
        results.append(res)
        labels.append(f"{name.replace('_', ' ')} (teacher)")
        methods[name] = {**_summary(res, "teacher"), "label": labels[-1], "student_minus": paired(results[0], res)}
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = examples_figure(results, labels, out_dir / "examples.png")
    return {"dataset": data["dataset"], "pool_size": sum(len(v) for v in data["pool"].values()),
            "methods": methods, "files": {"examples": f"{out_dir.name}/{fig.name}"}}


def students_game(students: Dict[str, torch.nn.Module], teacher: torch.nn.Module, world: WorldPaths,
                  settings: PointingSettings, seed: int) -> Dict[str, Any]:
    """The B-cos game for several students on the same grids (images every student and the teacher
    classify correctly and confidently). Returns {"methods": {label: summary}} or {"skipped": reason}."""
    data = confident_pool(teacher, world, settings)
    models = list(students.values())
    reason = _restrict(data, [teacher, *models], settings)
    if reason:
        return {"skipped": reason, "methods": {}}
    out = {}
    for label, model in students.items():
        res = _play(model, [teacher] + [m for m in models if m is not model], data, STUDENT_METHOD,
                    replace(settings, n_examples=0), seed)
        out[label] = _summary(res, label)
    return {"methods": out}
