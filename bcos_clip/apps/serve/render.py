"""ExplainResult -> the JSON answer of `POST /explain` (PNGs as base64) and the PNG sheet of `POST /sheet`.

Pictures come from bcos_clip.explain.visualize / sheet: for the B-cos student the colour explanation
(RGBA, transparent where the prompt gets no positive contribution), for a post-hoc baseline the heat map
over a grey copy of the image; for both the contribution heat map (blue < 0 < red, clipped at the 99.5th
percentile of |contribution|). All at the model's input resolution.
"""
from __future__ import annotations

import io
import time
from typing import Any, Dict, List, Sequence

from PIL import Image

from bcos_clip.apps.serve.engine import ExplainResult
from bcos_clip.apps.serve.io import b64, png_bytes
from bcos_clip.explain.color_scale import CONTRIBUTION_UNITS
from bcos_clip.explain.sheet import captioned, hstack, render_view, scale_bar, vstack
from bcos_clip.explain.visualize import color_explanation, heatmap, image_array, overlay, symmetric_scale


def _explanation_picture(result: ExplainResult, k: int) -> Dict[str, Any]:
    e = result.explanation
    if e.weights is not None:
        return {"explanation_kind": "colour",
                "explanation_png": b64(png_bytes(color_explanation(e.weights[0, k], e.images[0])))}
    return {"explanation_kind": "overlay",
            "explanation_png": b64(png_bytes(overlay(e.images[0], e.contributions[0, k])))}


def _prompt_json(result: ExplainResult, k: int, include_png: bool) -> Dict[str, Any]:
    e = result.explanation
    c = e.contributions[0, k]
    out: Dict[str, Any] = {"prompt": result.prompts[k], "score": float(e.scores[0, k]),
                           "bias": float(e.bias[0, k]) if result.is_bcos else None, "contribution_sum": float(c.sum()),
                           "positive_sum": float(c.clamp_min(0).sum()),
                           "max_abs_contribution": float(c.abs().max())}
    if include_png:
        out.update(_explanation_picture(result, k))
        out["heatmap_png"] = b64(png_bytes(heatmap(c)))
    return out


def result_json(result: ExplainResult, include_png: bool = True) -> Dict[str, Any]:
    """The JSON answer: metadata, timings (ms), the model-input image and one entry per prompt."""
    start = time.perf_counter()
    e = result.explanation
    prompts: List[Dict[str, Any]] = [_prompt_json(result, k, include_png) for k in range(len(result.prompts))]
    out: Dict[str, Any] = {
        "image_id": result.image_id, "method": result.method, "method_label": result.method_label,
        "is_bcos": result.is_bcos, "template": result.template, "cache_hit": result.cache_hit,
        "image_size": list(e.images.shape[-2:]), "results": prompts,
    }
    if include_png:
        out["image_png"] = b64(png_bytes(image_array(e.images[0])))
    timings = dict(result.timings_ms)
    timings["render"] = round((time.perf_counter() - start) * 1000.0, 2)
    timings["total"] = round(sum(timings.values()), 2)
    out["timings_ms"] = timings
    return out


def _sheet_row(result: ExplainResult, k: int, views: Sequence[str], cell: int) -> Image.Image:
    e = result.explanation
    score = f"cos {float(e.scores[0, k]):.3f}"
    if result.is_bcos:
        score += f"   bias {float(e.bias[0, k]):+.3f}   (contributions + bias = cos)"
    scale = symmetric_scale(e.contributions[0, k])
    row = hstack([render_view(e, v, 0, k, cell, scale=scale) for v in views])
    unit = CONTRIBUTION_UNITS if result.is_bcos else f"{result.method_label} attribution, per pixel"
    return vstack([captioned(row, [f'"{result.prompts[k]}"', score]), scale_bar(scale, row.width, unit)])


def sheet_image(result: ExplainResult, cell: int = 192) -> Image.Image:
    """One row per prompt: [image | colour explanation (B-cos) or overlay (baseline) | heat map],
    captioned with the prompt and its cosine; headed by the method."""
    views = ("image", "colour", "heatmap") if result.explanation.weights is not None else (
        "image", "overlay", "heatmap")
    rows = [_sheet_row(result, k, views, cell) for k in range(len(result.prompts))]
    head = [result.method_label, f"template: {result.template}   image {result.image_id[:12]}",
            "views: " + " | ".join(views)]
    return captioned(vstack(rows, gap=8), head)


def sheet_png(result: ExplainResult) -> bytes:
    buf = io.BytesIO()
    sheet_image(result).save(buf, format="PNG")
    return buf.getvalue()
