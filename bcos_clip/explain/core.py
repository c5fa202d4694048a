"""Contributions of every pixel to the cosine of an image and K prompts (METHOD.md §4).

score[n, k] = <o_n / ||o_n||, t_k> with ||o_n|| detached; in explanation mode the tower is the dynamic
linear map W(x), so grad = W(x)^T t_k / ||o_n|| and contributions = sum over the 6 input channels of
x6 * grad. `bias` is measured by its own replay pass (input 0, every dynamic factor frozen at its value
from the image's pass), never as score - sum(contributions).

Two paths give the same numbers:
- "prompts": one forward and K Jacobian rows (batched backwards of `k_chunk` rows);
- "basis": D rows over the embedding basis once (`contributions.image_contributions`), then one einsum;
  cheaper when K > D or when the same images get more prompts later.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from bcos_clip.explain.contributions import image_contributions
from bcos_clip.explain.explanation import Explanation
from bcos_clip.explain.jacobian import (compute_dtype, encode_input, no_tf32, project, require_bcos,
                                       row_contributions, tower_pass)
from bcos_clip.explain.prompts import (Prompts, Templates, check_text_for_images, prompt_embeddings,
                                       resolve_templates)
from bcos_clip.models import BcosCLIP

__all__ = ["Explanation", "explain", "prompt_embeddings", "require_bcos", "resolve_templates", "METHODS"]

METHODS = ("auto", "prompts", "basis")


def _prompts_chunk(model: BcosCLIP, images: torch.Tensor, text: torch.Tensor, k_chunk: int,
                   return_weights: bool) -> Dict[str, Optional[torch.Tensor]]:
    """One forward, K Jacobian rows: contributions (n, K, H, W), scores, bias (n, K), weights or None."""
    x6 = encode_input(images, compute_dtype(model))
    u, bias_basis = tower_pass(model, x6)
    text = text.to(x6.dtype)
    scores = project(u, text)  # (n, K)
    contributions, weights = row_contributions(scores, x6, k_chunk, return_weights)
    return dict(contributions=contributions, scores=scores.detach(), bias=project(bias_basis, text),
                weights=weights)


def _pick_method(method: str, k: int, d: int) -> str:
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "auto":
        return "basis" if k > d else "prompts"
    return method


def _cat(parts: List[Dict[str, Optional[torch.Tensor]]], key: str) -> Optional[torch.Tensor]:
    if parts[0][key] is None:
        return None
    return torch.cat([p[key] for p in parts]) if len(parts) > 1 else parts[0][key]


@no_tf32()
def explain(model: BcosCLIP, images: torch.Tensor, prompts: Prompts, templates: Templates = None, *,
            return_weights: bool = False, k_chunk: int = 64, method: str = "auto",
            n_chunk: Optional[int] = None) -> Explanation:
    """Explain the cosine of each image with each prompt.

    images: (N, 3, H, W) in [0, 1] (or (N, 6, H, W)); prompts: K strings, a (K, D) tensor, or a per-image
    (N, K, D) tensor; templates: None ("a photo of {}."), a set name ("openai": the 80 ImageNet
    templates, "simple"), a file, or a list of templates. method: "prompts" (K Jacobian rows), "basis"
    (D rows, then an einsum) or "auto" (basis when K > D). k_chunk: rows per batched backward;
    n_chunk: images per forward (bounds memory).
    Returns an Explanation with contributions (N, K, H, W), scores and bias (N, K), weights
    (N, K, 6, H, W) if return_weights; contributions.sum((-2,-1)) + bias == scores.
    Raises DegenerateEmbeddingError (a ValueError) when an image embedding is zero or non-finite.
    """
    model = require_bcos(model)
    device = next(model.parameters()).device
    text = prompt_embeddings(model, prompts, templates, device)
    check_text_for_images(text, images.shape[0] if isinstance(images, torch.Tensor) else -1)
    names = None if isinstance(prompts, torch.Tensor) else list(prompts)
    images = images.to(device)
    if _pick_method(method, text.shape[-2], text.shape[-1]) == "basis":
        cache = image_contributions(model, images, d_chunk=k_chunk, n_chunk=n_chunk, keep_weights=return_weights)
        e = cache.explain(text, prompts=names, return_weights=return_weights)
        e.images = images.detach()[:, :3]
        return e
    step = n_chunk or max(1, images.shape[0])
    parts = []
    for i in range(0, images.shape[0], step):
        chunk_text = text if text.dim() == 2 else text[i:i + step]
        parts.append(_prompts_chunk(model, images[i:i + step], chunk_text, k_chunk, return_weights))
    return Explanation(contributions=_cat(parts, "contributions"), scores=_cat(parts, "scores"),
                       bias=_cat(parts, "bias"), images=images.detach()[:, :3],
                       weights=_cat(parts, "weights"), prompts=names)
