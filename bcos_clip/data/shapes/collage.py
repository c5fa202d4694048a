"""Collages: 2 x 2 grids of small one-object scenes, a training sample kind of the shapes world.

The grid pointing game (METHOD.md §5) shows a model 2 x 2 grids of its test images, each shrunk to a
quarter of the input, and asks where each cell's class is; it presumes the model recognises a class in
a cell, as CLIP does (its web data holds collages and small objects). A tiny teacher that only ever saw
whole-image scenes does not: on such grids the demo's ViT teacher and students have a negative mean cosine
with the prompt of each cell (positive in about a quarter of the cells), so the game scores maps of a signal
the model does not hold. With a
``collage_share`` of the training stream drawn as collages (``build_world(collage_share=...)``), teacher
and student learn from them like from any other training image (the student through the teacher's
embeddings); evaluation tasks are unchanged.

Each cell is a one-object scene drawn at the full image size and shrunk to half (the pointing game
shrinks its grids the same way). Sampling and captions are in ``world.py`` (``sample_collage``,
``caption_collage``), beside the scenes': captions list the cells in reading order, sometimes with their
quadrant: ``"a collage of a red circle, a blue square, a green star and a yellow triangle"``,
``"a red circle in the top left, a blue square in the top right, ..."``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from PIL import Image

from bcos_clip.data.shapes.scene import Scene, render_scene

GRID = 2


@dataclass(frozen=True)
class Collage:
    """``cells``: GRID * GRID scenes of ``size`` pixels in reading order, each shown at ``size // GRID``."""

    size: int
    cells: Tuple[Scene, ...]

    @property
    def objects(self) -> tuple:
        return tuple(o for c in self.cells for o in c.objects)

    def metadata(self) -> dict:
        """JSON-friendly: the cells' scene metadata, their pixel boxes in the collage, and the labels."""
        step = self.size // GRID
        return {"size": self.size, "collage": GRID, "count": len(self.objects),
                "cells": [{"box": [(i % GRID) * step, (i // GRID) * step, (i % GRID + 1) * step,
                                   (i // GRID + 1) * step], **c.metadata()} for i, c in enumerate(self.cells)]}


def render_collage(collage: Collage) -> Image.Image:
    """The collage as an RGB image of ``collage.size`` pixels: each cell rendered, then shrunk
    (antialiased, as the pointing game's bilinear resize with antialias)."""
    step = collage.size // GRID
    out = Image.new("RGB", (collage.size, collage.size))
    for i, cell in enumerate(collage.cells):
        small = render_scene(cell).resize((step, step), Image.BILINEAR)
        out.paste(small, ((i % GRID) * step, (i // GRID) * step))
    return out


__all__ = ["Collage", "GRID", "render_collage"]
