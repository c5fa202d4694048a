"""Explanation pictures at display size: the photo is resampled smoothly, the maps keep their pixels.

A model sees small inputs (64 px in the demo, 224 px for RN50); panels are larger. Enlarging the photo
with nearest-neighbour makes it blocky, so the photo (and the grey copy under an overlay) is resampled
with Lanczos. The contribution map and the colour explanation are not interpolated: each of their pixels
becomes a square block of display pixels (nearest-neighbour), so what is shown is exactly what the
model attributes to each input pixel. Blocks are all the same size only when the panel is a whole
multiple of the input size, so panels are snapped to one (`display_cell`: 160 px asked for a 64-px
input gives 192 px); a panel smaller than the input shows the maps area-averaged. An overlay is composed
at display size: the smooth grey photo below, the heat layer with its blocks on top.

Arrays are (H, W, 3|4) floats in [0, 1]; `size` is (width, height) in display pixels, as Pillow's.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bcos_clip.explain.visualize import blend, gray_photo, heat_layer, image_array, to_pil

Size = Tuple[int, int]


def smooth_resize(rgb: np.ndarray, size: Size) -> np.ndarray:
    """A photo (H, W, 3) resampled to `size` with Lanczos (no blocks; values clipped to [0, 1])."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(to_pil(rgb).resize(size, Image.LANCZOS), dtype=np.float32) / 255.0


def display_cell(cell: int, size: int) -> int:
    """The panel size actually used for `cell` px asked and a `size`-px input: the nearest whole multiple
    of `size` (at least `size`) when enlarging, `cell` itself when reducing."""
    if cell < 1 or size < 1:
        raise ValueError(f"panel and input sizes must be >= 1, got {cell} and {size}")
    return cell if cell < size else size * int(math.floor(cell / size + 0.5))


def keep_pixels(array: np.ndarray, size: Size) -> np.ndarray:
    """A map (H, W, C) enlarged to `size` by nearest-neighbour (display pixel (i, j) shows map pixel
    (floor((i + 0.5) H / h), floor((j + 0.5) W / w)), as Pillow's NEAREST) or reduced by area averaging."""
    w, h = size
    if h < array.shape[0] or w < array.shape[1]:
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
        return F.interpolate(t, size=(h, w), mode="area")[0].permute(1, 2, 0).numpy()
    rows = np.minimum(((np.arange(h) + 0.5) * array.shape[0] / h).astype(int), array.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * array.shape[1] / w).astype(int), array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


def display_photo(image: torch.Tensor, size: Size) -> np.ndarray:
    """(3, H, W) image in [0, 1] -> (h, w, 3) smoothly resampled for display."""
    return smooth_resize(image_array(image), size)


def display_map(array: np.ndarray, size: Size) -> np.ndarray:
    """A colour explanation or heat map (H, W, C) -> (h, w, C) with its own pixels as blocks."""
    return keep_pixels(array, size)


def display_overlay(image: torch.Tensor, contribution: torch.Tensor, size: Size, percentile: float = 99.5,
                    max_alpha: float = 0.85, scale: Optional[float] = None) -> np.ndarray:
    """`visualize.overlay` at display size: the grey photo resampled smoothly, the heat layer (colour and
    opacity from the contributions (H, W)) enlarged with its pixels kept. -> (h, w, 3)."""
    color, alpha = heat_layer(contribution, percentile, max_alpha, scale)
    return blend(gray_photo(display_photo(image, size)), keep_pixels(color, size), keep_pixels(alpha, size))
