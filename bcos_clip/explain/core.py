"""Contributions of every pixel to the cosine of an image and K prompts: one forward, one batched
backward (METHOD.md §4).

score[n, k] = <o_n / ||o_n||, t_k> with ||o_n|| detached; in explanation mode the tower is the dynamic
linear map W(x), so grad = W(x)^T t_k / ||o_n|| and contributions = sum over the 6 input channels of
x6 * grad. `bias` is measured by its own replay pass (input 0, every dynamic factor frozen at its value
from the image's pass), never as score - sum(contributions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from bcos_clip import nn as bnn
from bcos_clip.models import BcosCLIP, check_images, encode_prompts
from bcos_clip.models.text import Template

Prompts = Union[Sequence[str], torch.Tensor]


@dataclass
class Explanation:
    """contributions (N, K, H, W); scores (N, K); bias (N, K); weights (N, K, 6, H, W) or None;
    images (N, 3, H, W) in [0, 1]; prompts: the K prompt strings (or None for given embeddings)."""

    contributions: torch.Tensor
    scores: torch.Tensor
    bias: torch.Tensor
    images: torch.Tensor
    weights: Optional[torch.Tensor] = None
    prompts: Optional[list] = None

    def completeness_error(self) -> torch.Tensor:
        """|sum(contributions) + bias - scores| per (n, k)."""
        return (self.contributions.sum((-2, -1)) + self.bias - self.scores).abs()


def require_bcos(model: object) -> BcosCLIP:
    if not isinstance(model, BcosCLIP):
        raise TypeError(f"explain() needs a B-cos model (BcosCLIP), got {type(model).__name__}: for a plain "
                        "CLIP use the post-hoc baselines (bcos_clip.explain.baselines, "
                        "`bcos-clip localize --method gradcam`)")
    return model


def prompt_embeddings(model: BcosCLIP, prompts: Prompts, templates: Optional[Sequence[Template]],
                      device: torch.device) -> torch.Tensor:
    """Strings (encoded with templates) or a (K, D) tensor -> (K, D) unit embeddings in fp32."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.shape[0] == 0:
            raise ValueError(f"prompt embeddings must be a non-empty (K, D) tensor, got {tuple(prompts.shape)}")
        if prompts.shape[1] != model.embed_dim:
            raise ValueError(f"prompt embeddings have dimension {prompts.shape[1]}, the model {model.embed_dim}")
        return F.normalize(prompts.detach().float().to(device), dim=-1)
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings or a (K, D) tensor")
    return encode_prompts(model, list(prompts), templates, device=device)


def _encode_input(images: torch.Tensor) -> torch.Tensor:
    check_images(images)
    x6 = bnn.add_inverse(images.float()) if images.shape[1] == 3 else images.float()
    return x6.detach().requires_grad_(True)


def _batched_grads(scores: torch.Tensor, x6: torch.Tensor, k_chunk: int) -> torch.Tensor:
    """d scores[:, k] / d x6 for all k: (K, N, 6, H, W), in chunks of k_chunk batched backwards."""
    n, k = scores.shape
    out = []
    for start in range(0, k, k_chunk):
        ks = range(start, min(k, start + k_chunk))
        eye = torch.zeros(len(ks), n, k, device=scores.device, dtype=scores.dtype)
        for i, kk in enumerate(ks):
            eye[i, :, kk] = 1.0
        (g,) = torch.autograd.grad(scores, x6, grad_outputs=eye, is_grads_batched=True,
                                   retain_graph=start + k_chunk < k)
        out.append(g)
    return torch.cat(out)


def explain(model: BcosCLIP, images: torch.Tensor, prompts: Prompts,
            templates: Optional[Sequence[Template]] = None, *, return_weights: bool = False,
            k_chunk: int = 64) -> Explanation:
    """Explain the cosine of each image with each prompt.

    images: (N, 3, H, W) in [0, 1] (or (N, 6, H, W)); prompts: K strings or a (K, D) tensor.
    Returns an Explanation with contributions (N, K, H, W) and contributions.sum((-2,-1)) + bias == scores.
    """
    model = require_bcos(model)
    device = next(model.parameters()).device
    text = prompt_embeddings(model, prompts, templates, device)
    was_training = model.training
    model.eval()
    x6 = _encode_input(images.to(device))
    try:
        with torch.enable_grad(), bnn.explanation_mode(model), bnn.dynamic_mode(model, "record"):
            out = model.encode_image6(x6).float()
            norm = out.norm(dim=-1, keepdim=True).detach()
            scores = (out / norm) @ text.T  # (N, K)
            grads = _batched_grads(scores, x6, k_chunk)  # (K, N, 6, H, W)
        with torch.no_grad(), bnn.dynamic_mode(model, "replay"):
            bias = (model.encode_image6(torch.zeros_like(x6)).float() / norm) @ text.T
    finally:
        bnn.clear_recorded(model)
        model.train(was_training)
    weights = grads.permute(1, 0, 2, 3, 4)  # (N, K, 6, H, W)
    contributions = (weights * x6.detach().unsqueeze(1)).sum(2)
    return Explanation(contributions=contributions.detach(), scores=scores.detach(), bias=bias.detach(),
                       images=images.detach()[:, :3] if images.shape[1] == 3 else x6.detach()[:, :3],
                       weights=weights.detach() if return_weights else None,
                       prompts=None if isinstance(prompts, torch.Tensor) else list(prompts))
