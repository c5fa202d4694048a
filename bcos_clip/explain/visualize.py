"""Pictures of explanations as arrays: B-cos colour explanations, contribution heat maps, overlays.

All functions take single-image tensors and return numpy arrays (H, W, 3|4) of floats in [0, 1] at
the model's input resolution; `to_pil` / `save_png` write them with Pillow (display-size pictures:
bcos_clip.explain.display). No matplotlib needed: the diverging colour map is a small built-in table
(blue - white - red, like matplotlib's "RdBu_r").

Smoothing of the colour explanation's alpha follows B-cos's official `gradient_to_image`
(B-cos/B-cos-v2, bcos/common.py): the per-pixel ||w|| over the 6 channels, set to ~0 where the
contribution is negative, box-averaged with a 15 x 15 window at 224 px input, then divided by its 99.5th
percentile and clipped to [0, 1]. The official window is a fixed 15 px whatever the input size; here
the default window keeps the same share of the image (`default_smooth`: 15 * size / 224, nearest odd,
e.g. 5 px at 64 px). One difference: the official average counts the zero padding, so alpha fades
over the outer 7 px; here the window is clipped to the image (a constant map stays constant).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Anchors of a blue - white - red diverging map at v = -1, -0.5, 0, 0.5, 1.
_DIVERGING = np.array([[0.020, 0.188, 0.380], [0.404, 0.663, 0.812], [0.969, 0.969, 0.969],
                       [0.839, 0.376, 0.302], [0.404, 0.000, 0.122]])
EPS = 1e-12
SMOOTH_REFERENCE = (15, 224)  # the official window (px) and the input size (px) it was chosen for


def default_smooth(size: int) -> int:
    """Box window of the colour explanation's alpha for a `size`-px input: the official 15 px at 224 px,
    scaled with the input size and rounded to the nearest odd integer (>= 1; 1 = none)."""
    if size < 1:
        raise ValueError(f"image size must be >= 1, got {size}")
    kernel, reference = SMOOTH_REFERENCE
    return max(1, 2 * int(math.floor(kernel * size / reference / 2)) + 1)


def _as_x6(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (6, H, W) = [x, 1-x]; (6, H, W) passes."""
    if image.dim() != 3 or image.shape[0] not in (3, 6):
        raise ValueError(f"image must be (3, H, W) or (6, H, W), got {tuple(image.shape)}")
    return torch.cat([image, 1 - image]) if image.shape[0] == 3 else image


def box_smooth(maps: torch.Tensor, kernel: int) -> torch.Tensor:
    """(..., H, W) -> same shape, mean over the kernel x kernel window (odd kernel) clipped to the image
    (padding not counted, so a constant map stays constant)."""
    if kernel <= 1:
        return maps
    if kernel % 2 == 0:
        raise ValueError(f"smoothing kernel must be odd, got {kernel}")
    shape = maps.shape
    flat = maps.reshape(-1, 1, *shape[-2:])
    return F.avg_pool2d(flat, kernel, stride=1, padding=kernel // 2, count_include_pad=False).reshape(shape)


def color_explanation(weights: torch.Tensor, image: torch.Tensor, smooth: Optional[int] = None,
                       percentile: float = 99.5) -> np.ndarray:
    """B-cos colour explanation (METHOD.md §4). weights: (6, H, W) dynamic linear weights of one
    (image, prompt); image: (3, H, W) in [0, 1] or its (6, H, W) encoding. -> RGBA (H, W, 4) in [0, 1].

    rgb: per pixel w / max_c |w_c|, negatives clamped to 0, rgb_c = w_c / (w_c + w_{c+3});
    alpha: ||w|| over the 6 channels (raw weights), 0 where the contribution sum_c x6_c w_c < 0,
    box-smoothed with an odd `smooth` x `smooth` window (None: `default_smooth(min(H, W))`, as the
    official visualisation; 0 or 1: none), divided by its `percentile`-th percentile, clipped to [0, 1].
    """
    w = weights.detach().float().cpu()
    x6 = _as_x6(image.detach().float().cpu())
    if w.shape != x6.shape:
        raise ValueError(f"weights {tuple(w.shape)} and image {tuple(x6.shape)} differ")
    contribution = (w * x6).sum(0)
    rel = (w / (w.abs().amax(0, keepdim=True) + EPS)).clamp_min(0)
    rgb = rel[:3] / (rel[:3] + rel[3:] + EPS)
    alpha = torch.where(contribution < 0, torch.zeros_like(contribution), w.norm(dim=0))
    alpha = box_smooth(alpha, default_smooth(min(w.shape[-2:])) if smooth is None else smooth)
    scale = torch.quantile(alpha.flatten(), percentile / 100.0)
    alpha = (alpha / (scale + EPS)).clamp(0, 1)
    return torch.cat([rgb, alpha[None]]).permute(1, 2, 0).numpy()


def diverging(values: np.ndarray) -> np.ndarray:
    """values in [-1, 1] (any shape) -> RGB (..., 3) in [0, 1]: blue < 0 < red, white at 0."""
    v = np.clip(np.asarray(values, dtype=np.float64), -1, 1)
    pos = (v + 1) * 2  # 0..4 over the 5 anchors
    lo = np.clip(np.floor(pos).astype(int), 0, 3)
    frac = (pos - lo)[..., None]
    return (1 - frac) * _DIVERGING[lo] + frac * _DIVERGING[lo + 1]


def symmetric_scale(contribution: torch.Tensor, percentile: float = 99.5) -> float:
    """The `percentile`-th percentile of |contribution|: the value mapped to full colour."""
    # numpy, not torch.quantile: older torch releases refuse more than 2**24 values (a sheet's maps can have more)
    return float(np.percentile(contribution.detach().float().abs().cpu().numpy(), percentile)) + EPS


def heatmap(contribution: torch.Tensor, percentile: float = 99.5, scale: Optional[float] = None) -> np.ndarray:
    """(H, W) contributions -> RGB (H, W, 3): symmetric colour map clipped at the `percentile`-th
    percentile of |contribution| (or at `scale`)."""
    c = contribution.detach().float().cpu()
    scale = scale or symmetric_scale(c, percentile)
    return diverging((c / scale).numpy())


def overlay(image: torch.Tensor, contribution: torch.Tensor, percentile: float = 99.5,
            max_alpha: float = 0.85, scale: Optional[float] = None) -> np.ndarray:
    """Heat map over a dimmed grey version of image (3, H, W) in [0, 1]; opacity grows with
    |contribution| (clipped at the percentile). -> RGB (H, W, 3)."""
    color, alpha = heat_layer(contribution, percentile, max_alpha, scale)
    return blend(gray_photo(image_array(image)), color, alpha)


def heat_layer(contribution: torch.Tensor, percentile: float = 99.5, max_alpha: float = 0.85,
               scale: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(H, W) contributions -> (colour (H, W, 3), opacity (H, W, 1)) of the overlay: the diverging colour
    of c / scale (clipped to [-1, 1]) and max_alpha * |c / scale|."""
    c = contribution.detach().float().cpu()
    v = np.clip((c / (scale or symmetric_scale(c, percentile))).numpy(), -1, 1)
    return diverging(v), (max_alpha * np.abs(v))[..., None]


def gray_photo(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) photo -> the dimmed grey (H, W, 3) the overlay is drawn on."""
    return np.repeat(0.25 + 0.5 * rgb.mean(-1, keepdims=True), 3, axis=-1)


def blend(background: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(1 - alpha) * background + alpha * colour, all (H, W, 3|1)."""
    return (1 - alpha) * background + alpha * color


def on_background(rgba: np.ndarray, background: float = 0.0) -> np.ndarray:
    """Composite RGBA (H, W, 4) over a uniform grey level -> RGB (H, W, 3)."""
    a = rgba[..., 3:4]
    return a * rgba[..., :3] + (1 - a) * background


def image_array(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3)."""
    return image.detach().float().cpu()[:3].clamp(0, 1).permute(1, 2, 0).numpy()


def to_pil(array: np.ndarray) -> Image.Image:
    """(H, W, 3|4) floats in [0, 1] -> RGB / RGBA PIL image."""
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) array, got {array.shape}")
    data = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(data)  # (H, W, 3) uint8 -> RGB, (H, W, 4) -> RGBA


def save_png(picture: Union[np.ndarray, Image.Image], path: Union[str, Path]) -> Path:
    """Write an (H, W, 3|4) array or a PIL image as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (picture if isinstance(picture, Image.Image) else to_pil(picture)).save(path, format="PNG")
    return path
