"""Labelled PIL pictures of explanations: one panel per (image, prompt), a sheet of images x prompts.

Panels (`VIEWS[name](explanation, n, k, smooth) -> (H, W, 3)`): "image", "colour" (B-cos colour
explanation on black; needs weights), "heatmap" (symmetric colour map of the contributions) and
"overlay" (the heat map over a grey copy of the image).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bcos_clip.explain.explanation import Explanation
from bcos_clip.explain.visualize import (color_explanation, heatmap, image_array, on_background, overlay,
                                         to_pil)

PAD = 4
View = Callable[[Explanation, int, int, int], np.ndarray]


def _color(e: Explanation, n: int, k: int, smooth: int) -> np.ndarray:
    if e.weights is None:
        raise ValueError("the colour view needs weights: explain(..., return_weights=True)")
    return on_background(color_explanation(e.weights[n, k], e.images[n], smooth=smooth))


VIEWS: Dict[str, View] = {
    "image": lambda e, n, k, smooth: image_array(e.images[n]),
    "colour": _color,
    "heatmap": lambda e, n, k, smooth: heatmap(e.contributions[n, k]),
    "overlay": lambda e, n, k, smooth: overlay(e.images[n], e.contributions[n, k]),
}


@lru_cache(maxsize=8)
def font(size: int = 13) -> ImageFont.ImageFont:
    """Pillow's built-in font at `size` px (bitmap fallback on old Pillow)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def fit_text(text: str, width: int, fnt: ImageFont.ImageFont) -> str:
    """Truncate `text` with an ellipsis to fit `width` pixels."""
    if fnt.getlength(text) <= width:
        return text
    while text and fnt.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def upscale(picture: Image.Image, cell: int) -> Image.Image:
    """Resize to a cell x cell square (nearest for enlargements, so pixels stay visible)."""
    if picture.size == (cell, cell):
        return picture
    method = Image.NEAREST if cell >= max(picture.size) else Image.LANCZOS
    return picture.resize((cell, cell), method)


def captioned(picture: Image.Image, lines: Sequence[str], size: int = 13) -> Image.Image:
    """`picture` with text lines above it on white."""
    fnt = font(size)
    line_h = size + 4
    out = Image.new("RGB", (picture.width, picture.height + line_h * len(lines) + PAD), "white")
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((PAD, PAD // 2 + i * line_h), fit_text(line, picture.width - 2 * PAD, fnt), fill="black", font=fnt)
    out.paste(picture.convert("RGB"), (0, line_h * len(lines) + PAD))
    return out


def hstack(pictures: Sequence[Image.Image], gap: int = PAD) -> Image.Image:
    """Side by side on white, top-aligned."""
    w = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    out = Image.new("RGB", (w, max(p.height for p in pictures)), "white")
    x = 0
    for p in pictures:
        out.paste(p.convert("RGB"), (x, 0))
        x += p.width + gap
    return out


def vstack(pictures: Sequence[Image.Image], gap: int = PAD) -> Image.Image:
    """One above the other on white, left-aligned."""
    h = sum(p.height for p in pictures) + gap * (len(pictures) - 1)
    out = Image.new("RGB", (max(p.width for p in pictures), h), "white")
    y = 0
    for p in pictures:
        out.paste(p.convert("RGB"), (0, y))
        y += p.height + gap
    return out


def _label(e: Explanation, k: int) -> str:
    return e.prompts[k] if e.prompts else f"prompt {k}"


def _score_line(e: Explanation, n: int, k: int) -> str:
    return f"cos {e.scores[n, k]:.3f}  (bias {e.bias[n, k]:+.3f})"


def pair_panel(e: Explanation, n: int, k: int, cell: int = 192, smooth: int = 0,
               views: Optional[Sequence[str]] = None) -> Image.Image:
    """[image | colour explanation | overlay] of image n and prompt k, titled with the prompt and score.
    Without weights the colour view is replaced by the heat map."""
    views = list(views or ("image", "colour" if e.weights is not None else "heatmap", "overlay"))
    row = hstack([upscale(to_pil(VIEWS[v](e, n, k, smooth)), cell) for v in views])
    return captioned(row, [f'"{_label(e, k)}"', _score_line(e, n, k) + "   views: " + ", ".join(views)])


def explanation_sheet(e: Explanation, view: str = "colour", cell: int = 160, smooth: int = 0,
                      image_names: Optional[Sequence[str]] = None) -> Image.Image:
    """Rows = images, columns = [image, prompt 1, ..., prompt K]; each prompt column headed by its
    prompt, each cell captioned with its cosine. view: a key of VIEWS."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r}: choose one of {', '.join(VIEWS)}")
    n_images, n_prompts = e.scores.shape
    rows: List[Image.Image] = []
    for n in range(n_images):
        name = image_names[n] if image_names else f"image {n}"
        cells = [captioned(upscale(to_pil(image_array(e.images[n])), cell), [name, ""])]
        for k in range(n_prompts):
            pic = upscale(to_pil(VIEWS[view](e, n, k, smooth)), cell)
            cells.append(captioned(pic, [_label(e, k), f"cos {e.scores[n, k]:.3f}"]))
        rows.append(hstack(cells))
    return vstack(rows, gap=2 * PAD)
