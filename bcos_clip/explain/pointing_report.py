"""Pictures of a pointing game: a histogram of the per-cell scores and example grids with their maps."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from bcos_clip.explain.pointing import cell_bounds, localisation_scores
from bcos_clip.explain.display import display_cell, display_overlay, display_photo
from bcos_clip.explain.sheet import captioned, font, hstack
from bcos_clip.explain.visualize import symmetric_scale, to_pil


def histogram_picture(scores: torch.Tensor, title: str, chance: Optional[float] = None, bins: int = 20,
                      width: int = 480, height: int = 300) -> Image.Image:
    """Histogram of scores in [0, 1] (Pillow only), with the mean (black) and chance (grey) marked."""
    values = scores.detach().flatten().double().cpu().numpy()
    counts, _ = np.histogram(values, bins=bins, range=(0.0, 1.0))
    left, right, top, bottom = 40, 12, 30, 34
    pic = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(pic)
    fnt = font(12)
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(int(counts.max()), 1)
    for i, c in enumerate(counts):
        x0 = left + i * plot_w / bins
        draw.rectangle([x0 + 1, top + plot_h * (1 - c / peak), x0 + plot_w / bins - 1, top + plot_h],
                       fill=(70, 110, 170))
    draw.line([left, top + plot_h, left + plot_w, top + plot_h], fill="black")
    draw.line([left, top, left, top + plot_h], fill="black")
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + t * plot_w
        draw.text((x - 10, top + plot_h + 4), f"{t:.2f}", fill="black", font=fnt)
    draw.text((4, top - 4), str(peak), fill="black", font=fnt)
    marks = [("mean", float(values.mean()), (0, 0, 0))] + ([("chance", chance, (150, 150, 150))] if chance else [])
    for name, v, color in marks:
        x = left + v * plot_w
        draw.line([x, top, x, top + plot_h], fill=color, width=2)
    mean_txt = f"mean {values.mean():.3f}" + (f", chance {chance:.3f}" if chance else "")
    draw.text((left, 6), f"{title}   {mean_txt}   (n = {values.size})", fill="black", font=fnt)
    draw.text((left + plot_w // 2 - 70, height - 16), "share of positive mass in the cell", fill="black", font=fnt)
    return pic


def _outline(picture: Image.Image, n: int, cell: int, color: tuple = (255, 215, 0)) -> Image.Image:
    """Outline cell `cell` (row-major) of an n x n grid picture."""
    pic = picture.copy()
    xs, ys = cell_bounds(pic.width, n), cell_bounds(pic.height, n)
    r, c = divmod(cell, n)
    ImageDraw.Draw(pic).rectangle([xs[c], ys[r], xs[c + 1] - 1, ys[r + 1] - 1], outline=color, width=3)
    return pic


def example_picture(example: Dict[str, torch.Tensor], classnames: Sequence[str], n: int, smooth: int,
                    panel: int = 200) -> Image.Image:
    """[grid | one overlay per cell class, its cell outlined, titled with class and score]."""
    maps = example["maps"]
    scores = localisation_scores(maps[None], n, smooth)[0]
    scale = symmetric_scale(maps)
    side = display_cell(panel, max(example["image"].shape[-2:]))
    pictures = [captioned(to_pil(display_photo(example["image"], (side, side))), ["grid", ""])]
    for c in range(n * n):
        pic = to_pil(display_overlay(example["image"], maps[c], (side, side), scale=scale))
        name = classnames[int(example["classes"][c])]
        pictures.append(captioned(_outline(pic, n, c), [name, f"score {scores[c]:.2f}"]))
    return hstack(pictures)
