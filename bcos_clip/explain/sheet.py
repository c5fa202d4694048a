"""Labelled PIL pictures of explanations: one panel per (image, prompt), a sheet of images x prompts.

Panels (`VIEWS[name](explanation, n, k, smooth) -> (H, W, 3)` at the model's input size;
`render_view` at display size, see bcos_clip.explain.display): "image", "colour" (B-cos colour
explanation on black; needs weights; smooth None = the official smoothing, `visualize.default_smooth`),
"heatmap" (symmetric colour map of the contributions) and "overlay" (the heat map over a grey copy of
the image). Heat maps come with a colour scale (bcos_clip.explain.color_scale); a sheet's heat maps
share one scale. Every panel is captioned with its cosine and bias.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bcos_clip.explain.color_scale import CONTRIBUTION_UNITS, color_bar
from bcos_clip.explain.display import display_cell, display_map, display_overlay, display_photo
from bcos_clip.explain.explanation import Explanation
from bcos_clip.explain.visualize import (color_explanation, default_smooth, heatmap, image_array, on_background,
                                         overlay, symmetric_scale, to_pil)

PAD = 4
HEAT_VIEWS = ("heatmap", "overlay")
View = Callable[[Explanation, int, int, Optional[int]], np.ndarray]


def _color(e: Explanation, n: int, k: int, smooth: Optional[int]) -> np.ndarray:
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


def upscale(picture: Image.Image, cell: int, smooth: bool = True) -> Image.Image:
    """Resize to a cell x cell square: Lanczos (photos), or nearest-neighbour with smooth=False (maps,
    whose pixels stay visible as blocks)."""
    if picture.size == (cell, cell):
        return picture
    return picture.resize((cell, cell), Image.LANCZOS if smooth else Image.NEAREST)


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


DisplayView = Callable[[Explanation, int, int, Tuple[int, int], Optional[int], Optional[float]], np.ndarray]
DISPLAY: Dict[str, DisplayView] = {  # (e, n, k, size, smooth, scale) -> (h, w, 3) at display size
    "image": lambda e, n, k, size, smooth, scale: display_photo(e.images[n], size),
    "colour": lambda e, n, k, size, smooth, scale: display_map(_color(e, n, k, smooth), size),
    "heatmap": lambda e, n, k, size, smooth, scale: display_map(heatmap(e.contributions[n, k], scale=scale), size),
    "overlay": lambda e, n, k, size, smooth, scale: display_overlay(e.images[n], e.contributions[n, k], size,
                                                                    scale=scale),
}


def render_view(e: Explanation, view: str, n: int, k: int, cell: int, smooth: Optional[int] = None,
                scale: Optional[float] = None) -> Image.Image:
    """View `view` of image n and prompt k as a square picture of `display_cell(cell, input size)` px:
    the photo resampled smoothly, the maps with their own pixels as blocks (bcos_clip.explain.display);
    heat maps clipped at `scale` (None: the 99.5th percentile of this map's |contribution|)."""
    if view not in DISPLAY:
        raise ValueError(f"view {view!r}: choose one of {', '.join(DISPLAY)}")
    side = display_cell(cell, max(e.images.shape[-2:]))
    return to_pil(DISPLAY[view](e, n, k, (side, side), smooth, scale))


def scale_bar(scale: float, width: int, label: str = CONTRIBUTION_UNITS, size: int = 12) -> Image.Image:
    """The heat maps' colour scale (-scale .. 0 .. +scale; default unit: contribution to the cosine), `width` px."""
    return color_bar(scale, width, font(size), label)


def smooth_note(e: Explanation, smooth: Optional[int]) -> str:
    """One line saying how the colour explanations were drawn."""
    k = default_smooth(min(e.images.shape[-2:])) if smooth is None else smooth
    how = f"|w| box-smoothed over {k} x {k} px" if k > 1 else "|w| (not smoothed)"
    return (f"colour explanation: opacity = {how}, scaled per panel to its 99.5th percentile; "
            "black = no positive contribution")


def pair_panel(e: Explanation, n: int, k: int, cell: int = 192, smooth: Optional[int] = None,
               views: Optional[Sequence[str]] = None) -> Image.Image:
    """[image | colour explanation | overlay] of image n and prompt k, titled with the prompt, score and
    bias, with the heat map's colour scale below. Without weights the colour view is replaced by the heat map."""
    views = list(views or ("image", "colour" if e.weights is not None else "heatmap", "overlay"))
    scale = symmetric_scale(e.contributions[n, k])
    row = hstack([render_view(e, v, n, k, cell, smooth, scale) for v in views])
    lines = [f'"{_label(e, k)}"', _score_line(e, n, k) + "   views: " + ", ".join(views)]
    footer = [scale_bar(scale, row.width)] if any(v in HEAT_VIEWS for v in views) else []
    return vstack([captioned(row, lines)] + footer)


def explanation_sheet(e: Explanation, view: str = "colour", cell: int = 160, smooth: Optional[int] = None,
                      image_names: Optional[Sequence[str]] = None) -> Image.Image:
    """Rows = images, columns = [image, prompt 1, ..., prompt K]; each cell captioned with its prompt,
    cosine and bias. view: a key of VIEWS. Heat-map views share one scale (the 99.5th percentile of
    |contribution| over the sheet), drawn as a colour bar below; colour views get a line on how they are drawn."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r}: choose one of {', '.join(VIEWS)}")
    n_images, n_prompts = e.scores.shape
    scale = symmetric_scale(e.contributions) if view in HEAT_VIEWS else None
    rows: List[Image.Image] = []
    for n in range(n_images):
        name = image_names[n] if image_names else f"image {n}"
        cells = [captioned(render_view(e, "image", n, 0, cell), [name, "", ""])]
        for k in range(n_prompts):
            lines = [_label(e, k), f"cos {e.scores[n, k]:.3f}", f"bias {e.bias[n, k]:+.3f}"]
            cells.append(captioned(render_view(e, view, n, k, cell, smooth, scale), lines))
        rows.append(hstack(cells))
    sheet = vstack(rows, gap=2 * PAD)
    if scale is not None:
        return vstack([sheet, scale_bar(scale, min(sheet.width, max(2 * cell, 480)))], gap=2 * PAD)
    if view == "colour":
        return captioned(sheet, [smooth_note(e, smooth)])
    return sheet
