"""The demo's charts and the picture of the shapes world: charts with matplotlib (Agg) when the ``plot``
extra is installed, else with Pillow (``charts_pillow``: the demo needs only ``pip install -e .``);
Pillow for the image grid. ``backend=`` ("matplotlib" | "pillow") forces one.

- ``world_samples``: training images of the world with their captions;
- ``pointing_chart``: mean pointing-game score per method (± standard error), chance marked;
- ``loss_chart``: zero-shot group means of teacher and students, one bar group per distillation loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from bcos_clip.apps.demo.charts_pillow import curve_panels, group_bars, pointing_bars
from bcos_clip.data.shapes.world import render_sample, train_sample
from bcos_clip.evaluation.plot import NEUTRAL, PALETTE, default_backend, pyplot, rgb01
from bcos_clip.explain.sheet import captioned, hstack, upscale, vstack


def _wrap(text: str, width: int = 26, n_lines: int = 4) -> List[str]:
    """Greedy word wrap into exactly ``n_lines`` lines of at most ``width`` characters (the last one
    ends with an ellipsis when the text is longer)."""
    lines: List[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > n_lines:
        lines = lines[:n_lines]
        lines[-1] += " …"
    return lines + [""] * (n_lines - len(lines))


def world_samples(seed: int, size: int, path: Path, n: int = 8, per_row: int = 4, cell: int = 160,
                  collage_share: float = 0.0) -> Path:
    """A grid of ``n`` training images (regenerated from the seed, as written to the shards) with captions."""
    tiles = []
    for i in range(n):
        scene, caption = train_sample(seed, i, size, collage_share=collage_share)
        tiles.append(captioned(upscale(render_sample(scene), cell), _wrap(caption), size=12))
    rows = [hstack(tiles[r:r + per_row]) for r in range(0, n, per_row)]
    path.parent.mkdir(parents=True, exist_ok=True)
    vstack(rows, gap=8).save(path)
    return path


POINTING_XLABEL = "pointing-game score (%): positive mass inside the right cell"
LOSS_YLABEL = "zero-shot top-1 (%)"


def pointing_chart(methods: Mapping[str, Mapping[str, float]], path: Path, chance: float,
                   backend: Optional[str] = None) -> Path:
    """Horizontal bars: mean score per method (label from each entry's "label"), ± sem, chance line."""
    names = list(methods)
    means = [100 * methods[m]["mean"] for m in names]
    errs = [100 * methods[m].get("sem", 0.0) for m in names]
    palette = [PALETTE[0] if methods[m].get("model") == "student" else NEUTRAL for m in names]
    if (backend or default_backend()) == "pillow":
        return pointing_bars([methods[m].get("label", m) for m in names], means, errs, palette, chance, path,
                             POINTING_XLABEL)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 0.55 * len(names) + 1.4))
    y = np.arange(len(names))[::-1]
    colors = [rgb01(c) for c in palette]
    ax.barh(y, means, xerr=errs, color=colors, capsize=3)
    for yi, v, e in zip(y, means, errs):
        ax.text(v + e + 1.5, yi, f"{v:.1f}", va="center", fontsize=9)
    ax.axvline(100 * chance, color="black", linestyle="--", linewidth=1)
    ax.text(100 * chance + 0.5, y.max() + 0.45, "chance", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([methods[m].get("label", m) for m in names])
    ax.set_xlim(0, 110)
    ax.set_xlabel(POINTING_XLABEL)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loss_chart(rows: Mapping[str, Mapping[str, Optional[float]]], chance: Mapping[str, float], path: Path,
               backend: Optional[str] = None) -> Path:
    """Grouped bars: {model label: {group: zero-shot mean}}; a chance tick per group."""
    if (backend or default_backend()) == "pillow":
        return group_bars(rows, chance, path, LOSS_YLABEL)
    plt = pyplot()
    groups = list(chance)
    labels = list(rows)
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(len(groups))
    for j, label in enumerate(labels):
        vals = [100 * (rows[label].get(g) or 0.0) for g in groups]
        ax.bar(x + (j - (len(labels) - 1) / 2) * width, vals, width, label=label, color=rgb01(PALETTE[j % len(PALETTE)]))
    for i, g in enumerate(groups):
        ax.hlines(100 * chance[g], i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel(LOSS_YLABEL)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("zero-shot group means (dashed: chance)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loss_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path,
                backend: Optional[str] = None) -> Path:
    """One panel per distillation loss: its training loss over steps (the scales differ per loss)."""
    series = {name: [(r["step"], r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float))]
              for name, rows in curves.items()}
    if (backend or default_backend()) == "pillow":
        return curve_panels(series, path, "training loss")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.6), squeeze=False)
    for ax, (name, points) in zip(axes[0], series.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], color=rgb01(PALETTE[0]))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("training loss", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_size(path: Path) -> Dict[str, int]:
    """{"width", "height"} of a picture (for the completeness checks of tests and the summary)."""
    with Image.open(path) as img:
        return {"width": img.width, "height": img.height}
