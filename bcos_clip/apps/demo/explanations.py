"""The demo's explanation figures: shapes scenes x text prompts, explained by the B-cos student.

Scenes are written as objects ``"colour shape@where"`` (where: a quadrant such as ``top left``, or
``center``) and drawn with the shapes world's own renderer, so every prompt names something that is
(or is not) in the picture. Output: ``sheet_colour.png`` (B-cos colour explanations),
``sheet_heatmap.png`` (contribution overlays), one ``pair_<scene>_<prompt>.png`` for the first
prompts, and a JSON-able summary with every cosine and the completeness check
(sum of contributions + bias = cosine, METHOD.md §4).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from bcos_clip.apps.demo.settings import ExplainSettings
from bcos_clip.data.shapes.scene import (COLORS, QUADRANTS, SHAPES, Scene, make_object, quadrant_box,
                                         render_scene, sample_background, sample_rng)
from bcos_clip.explain import Explanation, explain
from bcos_clip.explain.sheet import explanation_sheet, pair_panel
from bcos_clip.explain.visualize import save_png

log = logging.getLogger(__name__)

WHERE = QUADRANTS + ("center",)


def parse_object(text: str) -> Tuple[str, str, str]:
    """``"red circle@top left"`` -> ("red", "circle", "top left"); a clear error on anything else."""
    label, sep, where = text.partition("@")
    parts = label.split()
    if not sep or len(parts) != 2 or parts[0] not in COLORS or parts[1] not in SHAPES or where.strip() not in WHERE:
        raise ValueError(f"explain scene object {text!r}: expected 'colour shape@where' with colour in "
                         f"{list(COLORS)}, shape in {list(SHAPES)}, where in {list(WHERE)}")
    return parts[0], parts[1], where.strip()


def scene_from_objects(objects: Sequence[str], size: int, seed: int, index: int) -> Scene:
    """A scene with the given objects (one per quadrant or the centre) on a seeded background."""
    rng = sample_rng(seed, "demo/explain", index)
    parsed = [parse_object(o) for o in objects]
    wheres = [w for _, _, w in parsed]
    if len(set(wheres)) != len(wheres):
        raise ValueError(f"explain scene {list(objects)}: two objects share a place")
    scale = 0.17 if len(parsed) == 1 else 0.13
    made = []
    for color, shape, where in parsed:
        radius = scale * size * rng.uniform(0.9, 1.1)
        x0, x1, y0, y1 = quadrant_box(where, size, radius)
        made.append(make_object(rng, (color, shape), rng.uniform(x0, x1), rng.uniform(y0, y1), radius))
    return Scene(size=size, background=sample_background(rng), objects=tuple(made))


def scene_images(scenes: Sequence[Sequence[str]], size: int, seed: int) -> torch.Tensor:
    """Render scenes -> (N, 3, size, size) in [0, 1]."""
    pics = []
    for i, objects in enumerate(scenes):
        img = render_scene(scene_from_objects(objects, size, seed, i))
        pics.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(pics)


def scene_name(objects: Sequence[str]) -> str:
    """A short caption of a scene: "red circle (top left), blue square (bottom right)"."""
    return ", ".join(f"{c} {s} ({w})" for c, s, w in map(parse_object, objects))


def completeness(e: Explanation) -> Dict[str, float]:
    """Max |sum(contributions) + bias - score| and the same relative to the test tolerance
    1e-6 + 1e-4 |score| (<= 1 means every pair passes)."""
    err = e.completeness_error()
    tol = 1e-6 + 1e-4 * e.scores.abs()
    return {"max_abs_error": float(err.max()), "max_error_over_tolerance": float((err / tol).max())}


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")[:40]


def explain_figures(student: torch.nn.Module, out_dir: Path, settings: ExplainSettings, seed: int) -> Dict[str, Any]:
    """Explain the configured scenes with the configured prompts; write the sheets and pair panels.

    Returns {"scenes", "prompts", "templates", "scores" (N x K cosines), "bias", "top_prompt",
    "completeness", "files": {"colour", "heatmap", "pairs": [...]}} with paths relative to out_dir's parent.
    """
    scenes = [list(s) for s in settings.scenes]
    prompts = list(settings.prompts)
    if not scenes or not prompts:
        raise ValueError("demo settings 'explain': give at least one scene and one prompt")
    templates = list(settings.templates) if settings.templates else None
    cell = settings.cell
    images = scene_images(scenes, int(student.image_size), seed)
    e = explain(student, images, prompts, templates, return_weights=True).cpu()
    names = [scene_name(s) for s in scenes]
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [f"scene {i + 1}" for i in range(len(scenes))]
    files = {key: save_png(explanation_sheet(e, view, cell=cell, image_names=labels), out_dir / f"sheet_{key}.png")
             for key, view in (("colour", "colour"), ("heatmap", "overlay"))}
    pairs: List[Path] = []
    for n in range(len(scenes)):
        k = int(e.scores[n].argmax())
        path = out_dir / f"pair_{n + 1}_{_slug(prompts[k])}.png"
        pairs.append(save_png(pair_panel(e, n, k, cell=cell + 32), path))
    rel = out_dir.name
    return {"scenes": names, "prompts": prompts, "templates": templates,
            "scores": [[round(float(v), 6) for v in row] for row in e.scores],
            "bias": [[round(float(v), 6) for v in row] for row in e.bias],
            "top_prompt": [prompts[int(i)] for i in e.scores.argmax(1)], "completeness": completeness(e),
            "files": {"colour": f"{rel}/{files['colour'].name}", "heatmap": f"{rel}/{files['heatmap'].name}",
                      "pairs": [f"{rel}/{p.name}" for p in pairs]}}
