"""The colour scale drawn under heat maps: signed, centred at 0, with the values at its ends and its units.

Heat maps and overlays colour a contribution c with `visualize.diverging(c / scale)`: blue for
c <= -scale, white at 0, red for c >= +scale (scale: by default the 99.5th percentile of |c|). The bar
shows that map from -scale to +scale with ticks at both ends and at 0, and names the unit: a B-cos
contribution is the pixel's share of the explained cosine (the contributions of all pixels plus the
bias sum to the cosine, METHOD.md §4).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bcos_clip.explain.visualize import diverging, to_pil

CONTRIBUTION_UNITS = "contribution to the cosine, per pixel"
MARGIN = 6


def tick_label(value: float) -> str:
    """A short signed number: "0", "+0.012", "-3.1e-04"."""
    if value == 0:
        return "0"
    return f"{value:+.3f}" if 0.01 <= abs(value) < 100 else f"{value:+.1e}"


def color_bar(scale: float, width: int, fnt: ImageFont.ImageFont, label: str = CONTRIBUTION_UNITS,
               bar_height: int = 10) -> Image.Image:
    """A horizontal colour scale `width` px wide (wider if `label` needs it; RGB on white): the diverging map
    from -scale (left) through 0 (centre) to +scale (right), tick values under both ends and the centre,
    `label` below."""
    if not scale > 0:
        raise ValueError(f"colour scale: the value at full colour must be > 0, got {scale}")
    bar_w = max(width - 2 * MARGIN, 16)
    line_h = int(fnt.getbbox("0+-e")[3]) + 4
    out_w = max(bar_w + 2 * MARGIN, int(fnt.getlength(label)) + 2)
    out = Image.new("RGB", (out_w, bar_height + 2 * line_h + 8), "white")
    ramp = diverging(np.linspace(-1.0, 1.0, bar_w))[None].repeat(bar_height, axis=0)
    out.paste(to_pil(ramp), (MARGIN, 2))
    draw = ImageDraw.Draw(out)
    draw.rectangle([MARGIN - 1, 1, MARGIN + bar_w, bar_height + 2], outline=(90, 90, 90))
    y = bar_height + 4
    for frac, value in ((0.0, -scale), (0.5, 0.0), (1.0, scale)):
        x = MARGIN + frac * (bar_w - 1)
        draw.line([x, y - 1, x, y + 2], fill="black")
        text = tick_label(value)
        tw = fnt.getlength(text)
        tx = min(max(x - tw / 2, 0), out.width - tw)
        draw.text((tx, y + 3), text, fill="black", font=fnt)
    label_w = fnt.getlength(label)
    draw.text((max((out.width - label_w) / 2, 0), y + 3 + line_h), label, fill="black", font=fnt)
    return out
