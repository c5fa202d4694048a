"""The passes every B-cos explanation is made of (METHOD.md §4).

1. `tower_pass`: one forward in eval + explanation mode that records every dynamic factor, giving the
   normalised embedding u = o / ||o|| (||o|| detached, graph kept), then the replay pass with input 0
   and the recorded factors, giving the bias of every embedding coordinate. Recorded factors are
   dropped and the train/explanation state restored on exit, also on exceptions.
2. `batched_grads`: rows of the Jacobian of any (N, K) function of u, K at a time in chunks, each chunk
   one batched backward (`torch.autograd.grad(..., is_grads_batched=True)`); `row_contributions` runs
   them and keeps the contributions (and, on request, the weights) of every row.

Prompts path: y = u @ T^T (K rows). Basis path: y = u itself (D rows, the embedding basis).
"""
from __future__ import annotations

import contextlib

from typing import Iterator, Optional, Tuple

import torch

from bcos_clip import nn as bnn
from bcos_clip.models import BcosCLIP, check_image_embeddings, check_images


class NotBcosError(TypeError, ValueError):
    """A plain (non-B-cos) model where a BcosCLIP is needed (a TypeError, and a ValueError so that the
    CLI reports it as bad input in one line)."""


def require_bcos(model: object) -> BcosCLIP:
    """The model itself if it is a BcosCLIP, else a NotBcosError pointing to the post-hoc baselines."""
    if not isinstance(model, BcosCLIP):
        raise NotBcosError(f"explain() needs a B-cos model (BcosCLIP), got {type(model).__name__}: for a plain "
                        "CLIP use the post-hoc baselines (bcos_clip.explain.baselines.BASELINES, "
                        "`bcos-clip localize --method gradcam`)")
    return model


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Full fp32 matmuls / convolutions on CUDA while explaining: TF32 rounds at ~1e-3, beyond the
    completeness tolerance (contributions + bias = score). Restored on exit. Usable as a decorator."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def compute_dtype(model: BcosCLIP) -> torch.dtype:
    """float64 for a float64 image tower, else float32: explanations keep a float64 model's precision."""
    return torch.float64 if any(p.dtype == torch.float64 for p in model.visual.parameters()) else torch.float32


def encode_input(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] or (N, 6, H, W) -> leaf (N, 6, H, W) = [x, 1-x] of `dtype`, requiring grad."""
    check_images(images)
    x6 = bnn.add_inverse(images.to(dtype)) if images.shape[1] == 3 else images.to(dtype)
    return x6.detach().requires_grad_(True)


def tower_pass(model: BcosCLIP, x6: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """-> (u, bias): u (N, D) = o / ||o|| with the graph to x6 (||o|| detached); bias (N, D) detached,
    the image tower at input 0 with every dynamic factor (and ||o||) frozen at this image's values."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), bnn.explanation_mode(model), bnn.dynamic_mode(model, "record"):
            out = model.encode_image6(x6).to(x6.dtype)
        check_image_embeddings(out, model)  # a zero / non-finite o has no direction to explain
        norm = out.norm(dim=-1, keepdim=True).detach()
        with torch.no_grad(), bnn.explanation_mode(model), bnn.dynamic_mode(model, "replay"):
            bias = model.encode_image6(torch.zeros_like(x6)).to(x6.dtype) / norm
    finally:
        bnn.clear_recorded(model)
        model.train(was_training)
    return out / norm, bias


def project(u: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """u (N, D) with text (K, D) shared by all images or (N, K, D) per image -> (N, K)."""
    if text.dim() == 2:
        return u @ text.T
    return torch.einsum("nd,nkd->nk", u, text)


def batched_grads(y: torch.Tensor, x: torch.Tensor, chunk: int) -> Iterator[Tuple[slice, torch.Tensor]]:
    """Yield (slice of k, d y[:, k] / d x) with grads (k, N, *x.shape[1:]), `chunk` rows per batched
    backward. Images are independent (eval mode), so row k of all N images is one backward."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    n, k = y.shape
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        eye = torch.zeros(stop - start, n, k, device=y.device, dtype=y.dtype)
        eye[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        (g,) = torch.autograd.grad(y, x, grad_outputs=eye, is_grads_batched=True, retain_graph=stop < k)
        yield slice(start, stop), g


def row_contributions(y: torch.Tensor, x6: torch.Tensor, chunk: int,
                      keep_weights: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Contributions of every pixel to each of the K rows of y (N, K), a function of x6 (N, 6, H, W):
    (N, K, H, W) = sum over the 6 channels of x6 * d y[:, k] / d x6, and the weights d y / d x6
    (N, K, 6, H, W) when ``keep_weights`` (else None); `chunk` rows per batched backward."""
    n, k = y.shape
    contributions = torch.empty(n, k, *x6.shape[-2:], device=x6.device, dtype=x6.dtype)
    weights = torch.empty(n, k, *x6.shape[1:], device=x6.device, dtype=x6.dtype) if keep_weights else None
    for rows, g in batched_grads(y, x6, chunk):  # g: (k, N, 6, H, W)
        w = g.transpose(0, 1)
        contributions[:, rows] = (w * x6.detach().unsqueeze(1)).sum(2)
        if weights is not None:
            weights[:, rows] = w
    return contributions, weights
