"""Bar chart of group means (one panel per task, one bar per model in each group): matplotlib when
installed, else a plain Pillow drawing. ``PLOTTERS[name](data, path)``.

The one chart palette of the project (``PALETTE``, ``NEUTRAL``; ``rgb01`` for matplotlib), the Agg
``pyplot`` and the choice between the two (``default_backend``) live here; the demo's figures use them too."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bcos_clip.runtime.extras import available

log = logging.getLogger(__name__)

# {task: {group: {model: value in [0, 1] or None}}}
GroupMeans = Dict[str, Dict[str, Dict[str, Optional[float]]]]
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]
NEUTRAL = (154, 165, 177)  # bars that are not the subject of a chart (e.g. baselines)


def rgb01(color: Tuple[int, int, int]) -> Tuple[float, float, float]:
    """A palette colour (0-255) as matplotlib's (0-1) RGB."""
    return color[0] / 255, color[1] / 255, color[2] / 255


def default_backend() -> str:
    """"matplotlib" when the ``plot`` extra is installed, else "pillow" (looked up, not imported)."""
    return "matplotlib" if available("plot") else "pillow"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _models(data: GroupMeans) -> List[str]:
    seen: List[str] = []
    for groups in data.values():
        for vals in groups.values():
            seen += [m for m in vals if m not in seen]
    return seen


def plot_matplotlib(data: GroupMeans, path: Path) -> Path:
    plt = pyplot()
    models = _models(data)
    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 3.8), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for ax, (task, groups) in zip(axes[0], data.items()):
        names = list(groups)
        for j, m in enumerate(models):
            vals = [100 * (groups[g].get(m) or 0.0) for g in names]
            ax.bar([i + (j - (len(models) - 1) / 2) * width for i in range(len(names))], vals,
                   width, label=m, color=rgb01(PALETTE[j % len(PALETTE)]))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_title(task)
        ax.set_ylabel("group mean (%)")
        ax.set_ylim(0, 100)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pillow(data: GroupMeans, path: Path) -> Path:
    from PIL import Image, ImageDraw

    models = _models(data)
    panel_w, h, top, bottom = 360, 300, 30, 40
    img = Image.new("RGB", (panel_w * max(len(data), 1), h + 20 * len(models)), "white")
    draw = ImageDraw.Draw(img)
    for p, (task, groups) in enumerate(data.items()):
        x0 = p * panel_w + 20
        draw.text((x0, 5), task, fill="black")
        draw.line([(x0, h - bottom), (x0 + panel_w - 40, h - bottom)], fill="black")
        slot = (panel_w - 40) / max(len(groups), 1)
        bar = slot * 0.8 / max(len(models), 1)
        for i, g in enumerate(groups):
            draw.text((x0 + i * slot + 2, h - bottom + 5), g, fill="black")
            for j, m in enumerate(models):
                v = groups[g].get(m) or 0.0
                left = x0 + i * slot + j * bar
                draw.rectangle([left, h - bottom - v * (h - bottom - top), left + bar - 2, h - bottom],
                               fill=PALETTE[j % len(PALETTE)])
    for j, m in enumerate(models):
        draw.rectangle([20, h + 5 + 20 * j, 32, h + 17 + 20 * j], fill=PALETTE[j % len(PALETTE)])
        draw.text((40, h + 5 + 20 * j), m, fill="black")
    img.save(path)
    return path


PLOTTERS: Dict[str, Callable[[GroupMeans, Path], Path]] = {"matplotlib": plot_matplotlib,
                                                           "pillow": plot_pillow}


def bar_chart(data: GroupMeans, path: Path, backend: Optional[str] = None) -> Path:
    """Write the chart to ``path`` (PNG); ``backend`` None = matplotlib if importable, else Pillow."""
    backend = backend or default_backend()
    if backend not in PLOTTERS:
        raise ValueError(f"plot backend {backend!r}: choose one of {', '.join(PLOTTERS)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return PLOTTERS[backend](data, Path(path))
