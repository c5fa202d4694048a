"""The demo's charts drawn with Pillow only: what ``figures`` uses when matplotlib (the ``plot`` extra) is
not installed, so the demo needs nothing beyond ``pip install -e .`` (as ``evaluation.plot`` falls back
for the benchmark chart). Same data, same palette, plainer drawing: bars, error bars, chance marks,
value labels and axis ticks, no anti-aliased text.

- ``pointing_bars``: horizontal bars, one per method (mean ± sem, in %), chance as a dashed line;
- ``group_bars``: grouped vertical bars {label: {group: value}}, a chance tick per group;
- ``curve_panels``: one panel per series of (step, value) points.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from bcos_clip.evaluation.plot import PALETTE
from bcos_clip.explain.sheet import font

Color = Tuple[int, int, int]
WHITE, BLACK, GRID = (255, 255, 255), (0, 0, 0), (200, 200, 200)


def _dashed(draw: ImageDraw.ImageDraw, p0: Tuple[float, float], p1: Tuple[float, float], dash: int = 5) -> None:
    """A dashed straight line from ``p0`` to ``p1`` (horizontal or vertical)."""
    (x0, y0), (x1, y1) = p0, p1
    length = max(abs(x1 - x0), abs(y1 - y0))
    for start in range(0, int(length), 2 * dash):
        a, b = start / max(length, 1), min(start + dash, length) / max(length, 1)
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                  fill=BLACK, width=1)


def pointing_bars(labels: Sequence[str], means: Sequence[float], errors: Sequence[float],
                  colors: Sequence[Color], chance: float, path: Path, xlabel: str) -> Path:
    """Horizontal bars of ``means`` (percent, 0-100) ± ``errors``, labels on the left, chance dashed."""
    fnt, left, width, row = font(12), 250, 360, 30
    height = row * len(labels) + 70
    img = Image.new("RGB", (left + width + 60, height), WHITE)
    draw = ImageDraw.Draw(img)
    x_of = lambda v: left + width * min(max(v, 0.0), 110.0) / 110.0  # noqa: E731
    for tick in range(0, 101, 20):
        draw.line([(x_of(tick), 10), (x_of(tick), height - 50)], fill=GRID)
        draw.text((x_of(tick) - 8, height - 46), str(tick), fill=BLACK, font=fnt)
    for i, (label, mean, err, color) in enumerate(zip(labels, means, errors, colors)):
        y = 15 + i * row
        draw.text((8, y + 4), label[:38], fill=BLACK, font=fnt)
        draw.rectangle([left, y, x_of(mean), y + row - 10], fill=color)
        draw.line([(x_of(mean - err), y + (row - 10) / 2), (x_of(mean + err), y + (row - 10) / 2)], fill=BLACK)
        draw.text((x_of(mean + err) + 5, y + 4), f"{mean:.1f}", fill=BLACK, font=fnt)
    _dashed(draw, (x_of(100 * chance), 10), (x_of(100 * chance), height - 50))
    draw.text((x_of(100 * chance) + 3, height - 64), "chance", fill=BLACK, font=fnt)
    draw.text((left, height - 28), xlabel, fill=BLACK, font=fnt)
    img.save(path)
    return path


def group_bars(rows: Mapping[str, Mapping[str, Optional[float]]], chance: Mapping[str, float], path: Path,
               ylabel: str) -> Path:
    """Grouped bars (one group per key of ``chance``, one bar per row label; values in [0, 1] shown in %),
    a dashed chance tick per group, a legend below."""
    fnt, top, plot_h, left, slot = font(12), 30, 240, 50, 180
    groups, labels = list(chance), list(rows)
    img = Image.new("RGB", (left + slot * max(len(groups), 1) + 20, top + plot_h + 40 + 18 * len(labels)), WHITE)
    draw = ImageDraw.Draw(img)
    y_of = lambda v: top + plot_h * (1.0 - min(max(v, 0.0), 1.0))  # noqa: E731
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(left, y_of(tick)), (img.width - 20, y_of(tick))], fill=GRID)
        draw.text((left - 30, y_of(tick) - 7), f"{100 * tick:.0f}", fill=BLACK, font=fnt)
    draw.text((8, 8), ylabel, fill=BLACK, font=fnt)
    bar = slot * 0.8 / max(len(labels), 1)
    for i, g in enumerate(groups):
        x0 = left + i * slot + slot * 0.1
        for j, label in enumerate(labels):
            value = rows[label].get(g) or 0.0
            draw.rectangle([x0 + j * bar, y_of(value), x0 + (j + 1) * bar - 2, y_of(0.0)],
                           fill=PALETTE[j % len(PALETTE)])
        _dashed(draw, (x0 - 4, y_of(chance[g])), (x0 + slot * 0.8 + 4, y_of(chance[g])))
        draw.text((x0, y_of(0.0) + 6), g, fill=BLACK, font=fnt)
    for j, label in enumerate(labels):
        y = top + plot_h + 30 + 18 * j
        draw.rectangle([left, y, left + 12, y + 12], fill=PALETTE[j % len(PALETTE)])
        draw.text((left + 18, y - 1), label, fill=BLACK, font=fnt)
    img.save(path)
    return path


def _polyline(points: Sequence[Tuple[float, float]], box: Tuple[int, int, int, int]) -> List[Tuple[float, float]]:
    """Data points scaled into the pixel box (x0, y0, x1, y1), y upwards."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    x0, y0, x1, y1 = box
    return [(x0 + (x - x_lo) / max(x_hi - x_lo, 1e-12) * (x1 - x0),
             y1 - (y - y_lo) / max(y_hi - y_lo, 1e-12) * (y1 - y0)) for x, y in points]


def curve_panels(series: Mapping[str, Sequence[Tuple[float, float]]], path: Path, ylabel: str) -> Path:
    """One panel per name: its (step, value) points as a line, the first and last value written."""
    fnt, panel, height = font(11), 300, 240
    img = Image.new("RGB", (panel * max(len(series), 1), height), WHITE)
    draw = ImageDraw.Draw(img)
    for p, (name, points) in enumerate(series.items()):
        box = (p * panel + 45, 25, p * panel + panel - 15, height - 40)
        draw.rectangle(box, outline=GRID)
        draw.text((box[0], 6), name, fill=BLACK, font=fnt)
        draw.text((box[0], height - 30), f"step; {ylabel}", fill=BLACK, font=fnt)
        if len(points) >= 2:
            draw.line(_polyline(points, box), fill=PALETTE[0], width=2)
        if points:
            draw.text((box[0] - 40, box[1]), f"{max(v for _, v in points):.3g}", fill=BLACK, font=fnt)
            draw.text((box[0] - 40, box[3] - 12), f"{min(v for _, v in points):.3g}", fill=BLACK, font=fnt)
    img.save(path)
    return path


__all__ = ["curve_panels", "group_bars", "pointing_bars"]
