"""Refit the running statistics of the uncentered BatchNorm layers of a converted tower.

Why: ``bcosify`` copies the plain tower's BatchNorm statistics. At B = 1 with biases that is exact; at
B = 2 every B-cos layer scales its output by |cos|, so the activations a BatchNorm sees are far smaller
than the statistics it divides by, every layer shrinks, and in eval mode the embedding of a deep tower
can underflow to exactly 0 (in training mode the batch statistics hide this). A few forward passes on
real images fix it.

What is refitted: :class:`bcos_clip.nn.UncenteredBatchNorm2d` keeps one buffer, ``running_var``, the
unbiased per-channel variance of its input (``y = gamma * x / sqrt(running_var + eps)`` in eval mode).
Each such layer runs in training mode (normalising by the batch's own variance, as in distillation),
while every other module stays in eval mode; the new ``running_var`` is the average of the batches'
unbiased variances, weighted by their image counts (a cumulative average, not a momentum trace),
accumulated in float64. Layers with a bias (``bias=True`` conversions) hold the centring term folded
from the plain statistics; refitting their variance would break that fold (and the B = 1 equivalence),
so they are left as they are. Nothing else changes: no gradients, no parameter updates, the train /
eval mode of every module restored, and the old statistics restored if a batch fails.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn

from bcos_clip.nn.norms import UncenteredBatchNorm2d

log = logging.getLogger(__name__)

Images = Union[torch.Tensor, Iterable[Any]]


@dataclass(frozen=True)
class RecalibrationReport:
    """What ``recalibrate_batchnorm`` did: layers refitted / left (with a bias), images and batches read."""

    refitted: List[str]
    skipped_with_bias: List[str]
    images: int
    batches: int

    def summary(self) -> str:
        return (f"refitted the running variance of {len(self.refitted)} BatchNorm layers on {self.images} images "
                f"({self.batches} batches)" + (f"; left {len(self.skipped_with_bias)} with a bias as they are"
                                               if self.skipped_with_bias else ""))


def _batches(data: Images, batch_size: int) -> Iterable[Any]:
    if isinstance(data, torch.Tensor):
        return (data[i:i + batch_size] for i in range(0, data.shape[0], batch_size))
    return data


def _images_of(batch: Any) -> torch.Tensor:
    """A batch, an (images, ...) tuple / list or a dict with "images" -> (N, C, H, W) floats in [0, 1]."""
    if isinstance(batch, dict):
        batch = batch.get("images")
    elif isinstance(batch, (tuple, list)):
        batch = batch[0] if batch else None
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        raise ValueError("calibration data: each batch must be an (N, 3, H, W) image tensor in [0, 1] or a tuple "
                         f"starting with one, got {type(batch).__name__}"
                         + (f" of shape {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else ""))
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch


class _VarianceSums:
    """Per layer: sum over batches of (images x unbiased batch variance), in float64, and the image count."""

    def __init__(self, layers: Dict[str, UncenteredBatchNorm2d]) -> None:
        self.sums = {name: torch.zeros(bn.num_features, dtype=torch.float64, device=bn.running_var.device)
                     for name, bn in layers.items()}
        self.images = {name: 0 for name in layers}

    def hook(self, name: str) -> Callable:
        def record(_: nn.Module, inputs: tuple) -> None:
            x = inputs[0].detach().double()
            m = x.numel() / x.shape[1]  # values per channel: N * H * W
            var = x.var(dim=(0, 2, 3), correction=0) * (m / max(m - 1.0, 1.0))  # unbiased, as the layer keeps it
            self.sums[name] += var * x.shape[0]
            self.images[name] += x.shape[0]
        return record

    def mean(self, name: str) -> torch.Tensor:
        return self.sums[name] / self.images[name]


def _split_layers(model: nn.Module) -> Tuple[Dict[str, UncenteredBatchNorm2d], List[str]]:
    layers = {n: m for n, m in model.named_modules() if isinstance(m, UncenteredBatchNorm2d)}
    if not layers:
        raise ValueError(f"recalibrate_batchnorm: {type(model).__name__} has no uncentered BatchNorm layer "
                         "(only B-cosified ResNet towers have them; ViT towers have nothing to refit)")
    free = {n: m for n, m in layers.items() if m.bias is None}
    if not free:
        raise ValueError(f"recalibrate_batchnorm: all {len(layers)} BatchNorm layers carry the bias folded from "
                         "the plain model's statistics (converted with bias=True, e.g. the exact B = 1 tower); "
                         "refitting their variance would break it. Convert without biases to recalibrate.")
    return free, sorted(set(layers) - set(free))


def _forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return model.encode_image if hasattr(model, "encode_image") else model


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images_or_loader: Images, batches: Optional[int] = None, *,
                          batch_size: int = 64) -> RecalibrationReport:
    """Refit ``running_var`` of every bias-free uncentered BatchNorm of ``model`` in a few forward passes.

    model: a BcosCLIP (or any module with ``encode_image``, else called directly) holding
        ``UncenteredBatchNorm2d`` layers; changed in place.
    images_or_loader: an (N, 3, H, W) tensor in [0, 1] (cut into ``batch_size`` batches), or an
        iterable / DataLoader of such batches, of ``(images, ...)`` tuples or of dicts with "images"
        (uint8 images are divided by 255).
    batches: use at most this many batches (None: all).
    Returns a RecalibrationReport. Raises ValueError when there is nothing to refit or no image.
    """
    if batches is not None and batches < 1:
        raise ValueError(f"recalibrate_batchnorm: batches must be >= 1, got {batches}")
    if batch_size < 1:
        raise ValueError(f"recalibrate_batchnorm: batch_size must be >= 1, got {batch_size}")
    layers, skipped = _split_layers(model)
    sums = _VarianceSums(layers)
    saved = {n: bn.running_var.clone() for n, bn in layers.items()}
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters())
    handles = [bn.register_forward_pre_hook(sums.hook(n)) for n, bn in layers.items()]
    n_batches = n_images = 0
    try:
        model.eval()
        for bn in layers.values():
            bn.train()
        for batch in itertools.islice(_batches(images_or_loader, batch_size), batches):
            images = _images_of(batch).to(param.device, param.dtype)
            if images.shape[0] == 0:
                continue
            _forward(model)(images)
            n_batches, n_images = n_batches + 1, n_images + images.shape[0]
        if n_batches == 0:
            raise ValueError("recalibrate_batchnorm: the calibration data gave no image")
        for n, bn in layers.items():
            bn.running_var.copy_(sums.mean(n).to(bn.running_var.dtype))
    except BaseException:
        for n, bn in layers.items():
            bn.running_var.copy_(saved[n])
        raise
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    report = RecalibrationReport(sorted(layers), skipped, n_images, n_batches)
    log.info("recalibrate_batchnorm: %s", report.summary())
    return report
