"""Pictures of explanations as arrays: B-cos colour explanations, contribution heat maps, overlays.

All functions take single-image tensors and return numpy arrays (H, W, 3|4) of floats in [0, 1];
`to_pil` / `save_png` write them with Pillow. No matplotlib needed: the diverging colour map is a
small built-in table (blue - white - red, like matplotlib's "RdBu_r").
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Anchors of a blue - white - red diverging map at v = -1, -0.5, 0, 0.5, 1.
_DIVERGING = np.array([[0.020, 0.188, 0.380], [0.404, 0.663, 0.812], [0.969, 0.969, 0.969],
                       [0.839, 0.376, 0.302], [0.404, 0.000, 0.122]])
EPS = 1e-12


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


def color_explanation(weights: torch.Tensor, image: torch.Tensor, smooth: int = 0,
                       percentile: float = 99.5) -> np.ndarray:
    """B-cos colour explanation (METHOD.md §4). weights: (6, H, W) dynamic linear weights of one
    (image, prompt); image: (3, H, W) in [0, 1] or its (6, H, W) encoding. -> RGBA (H, W, 4) in [0, 1].

    rgb: per pixel w / max_c |w_c|, negatives clamped to 0, rgb_c = w_c / (w_c + w_{c+3});
    alpha: ||w|| over the 6 channels (raw weights), 0 where the contribution sum_c x6_c w_c < 0,
    optionally box-smoothed, divided by its `percentile`-th percentile and clipped to [0, 1].
    """
    w = weights.detach().float().cpu()
    x6 = _as_x6(image.detach().float().cpu())
    if w.shape != x6.shape:
        raise ValueError(f"weights {tuple(w.shape)} and image {tuple(x6.shape)} differ")
    contribution = (w * x6).sum(0)
    rel = (w / (w.abs().amax(0, keepdim=True) + EPS)).clamp_min(0)
    rgb = rel[:3] / (rel[:3] + rel[3:] + EPS)
    alpha = torch.where(contribution < 0, torch.zeros_like(contribution), w.norm(dim=0))
    alpha = box_smooth(alpha, smooth)
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
    return float(torch.quantile(contribution.detach().float().abs().flatten().cpu(), percentile / 100.0)) + EPS


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
    img = image.detach().float().cpu()[:3].permute(1, 2, 0).numpy()
    c = contribution.detach().float().cpu()
    v = np.clip((c / (scale or symmetric_scale(c, percentile))).numpy(), -1, 1)
    gray = np.repeat((0.25 + 0.5 * img.mean(-1, keepdims=True)), 3, axis=-1)
    a = (max_alpha * np.abs(v))[..., None]
    return (1 - a) * gray + a * diverging(v)


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
