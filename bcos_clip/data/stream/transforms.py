"""Image transforms for training and held-out checks, driven by an explicit random generator.

Training augmentations draw their parameters from a ``random.Random`` seeded per sample, so that a
sample's crop depends only on (seed, epoch, shard, key, pass) and not on how many samples a worker
has seen. That keeps the data stream reproducible across worker counts and across a resume.

All functions return ``uint8`` tensors ``(3, S, S)``: the trainer turns them into ``[0, 1]`` floats
on the device (4x less inter-process traffic than float32).
"""
from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


@dataclass(frozen=True)
class CropSpec:
    """RandomResizedCrop + horizontal flip settings (torchvision's defaults)."""

    size: int
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5


def decode_rgb(data: bytes) -> Image.Image:
    """Decode encoded image bytes to a fully loaded RGB PIL image (raises on corrupt data)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.convert("RGB")


def random_resized_crop_box(width: int, height: int, spec: CropSpec,
                            rng: random.Random) -> Tuple[int, int, int, int]:
    """Sample a crop box ``(left, top, w, h)`` as torchvision's RandomResizedCrop does.

    Ten tries at a random area fraction in ``spec.scale`` and log-uniform aspect ratio in
    ``spec.ratio``; then a centre crop clamped to the ratio range.
    """
    area = width * height
    log_ratio = (math.log(spec.ratio[0]), math.log(spec.ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(spec.scale[0], spec.scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(spec.ratio):
        w, h = width, int(round(width / min(spec.ratio)))
    elif in_ratio > max(spec.ratio):
        h, w = height, int(round(height * max(spec.ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def to_uint8_chw(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> ``(3, H, W)`` uint8 tensor."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def train_augment(img: Image.Image, spec: CropSpec, rng: random.Random) -> torch.Tensor:
    """RandomResizedCrop(``spec.size``, bicubic) + horizontal flip.

    Returns:
        ``(3, S, S)`` uint8 tensor, ``S = spec.size``.
    """
    left, top, w, h = random_resized_crop_box(img.width, img.height, spec, rng)
    out = img.resize((spec.size, spec.size), Image.BICUBIC, box=(left, top, left + w, top + h))
    if rng.random() < spec.hflip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return to_uint8_chw(out)


def eval_transform(img: Image.Image, size: int) -> torch.Tensor:
    """CLIP's evaluation transform: resize the shorter side to ``size`` (bicubic), centre crop.

    Returns:
        ``(3, size, size)`` uint8 tensor.
    """
    scale = size / min(img.width, img.height)
    new_w = max(size, int(round(img.width * scale)))
    new_h = max(size, int(round(img.height * scale)))
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return to_uint8_chw(img.crop((left, top, left + size, top + size)))


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 -> float32 in ``[0, 1]`` (floats pass through unchanged)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images
