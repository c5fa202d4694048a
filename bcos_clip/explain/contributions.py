"""The per-pixel contribution tensor: explain an image once, then any prompt set with one einsum.

For an image, M (D, H, W) holds the contributions of every pixel to each coordinate of the normalised
embedding u = o / ||o|| (||o|| detached): M[d] = sum over the 6 input channels of x6 * d u_d / d x6, from
D rows of the Jacobian (batched backwards over the embedding basis). Since the score of a unit prompt t
is <u, t> = sum_d u_d t_d and every pass is linear in t,

    contributions[k] = einsum("dhw,d->hw", M, t_k),   bias[k] = bias_basis . t_k,   score[k] = u . t_k,

and completeness (sum of contributions + bias = score) holds for every t because it holds for every
basis vector. This pays off when K > D prompts, or when the same images get new prompts later (a
server caches `ImageContributions` per image and answers each query with `.explain(text)`).

Example::

    cache = image_contributions(model, images)                  # D backwards, once
    text = prompt_embeddings(model, ["a dog", "a cat"], None, cache.device)
    e = cache.explain(text, prompts=["a dog", "a cat"])         # an Explanation, one einsum
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from bcos_clip.explain.explanation import Explanation
from bcos_clip.explain.jacobian import (compute_dtype, encode_input, no_tf32, project, require_bcos,
                                       row_contributions, tower_pass)
from bcos_clip.explain.prompts import check_text_for_images
from bcos_clip.models import BcosCLIP


@dataclass
class ImageContributions:
    """Everything needed to explain N images for any prompts, without touching the model again.

    contributions: (N, D, H, W), M above; bias: (N, D), the replay pass per basis vector;
    embedding: (N, D), u = o / ||o||; images: (N, 3, H, W) in [0, 1];
    weights: (N, D, 6, H, W) dynamic linear weights per basis vector, or None (kept only on request:
    6x the memory of `contributions`; needed for colour explanations of new prompts).
    """

    contributions: torch.Tensor
    bias: torch.Tensor
    embedding: torch.Tensor
    images: torch.Tensor
    weights: Optional[torch.Tensor] = None

    @property
    def device(self) -> torch.device:
        return self.contributions.device

    @property
    def nbytes(self) -> int:
        """Memory held by the cached tensors, in bytes."""
        tensors = [self.contributions, self.bias, self.embedding, self.images, self.weights]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def to(self, device: torch.device | str) -> "ImageContributions":
        """A copy with every tensor on `device` (e.g. cache on the CPU, answer on the GPU)."""
        return ImageContributions(*(None if t is None else t.to(device) for t in
                                    (self.contributions, self.bias, self.embedding, self.images, self.weights)))

    def completeness_error(self) -> torch.Tensor:
        """(N, D): |sum(M) + bias - u| per basis vector."""
        return (self.contributions.sum((-2, -1)) + self.bias - self.embedding).abs()

    def scores(self, text: torch.Tensor) -> torch.Tensor:
        """text (K, D) or (N, K, D) unit embeddings -> cosines (N, K)."""
        return project(self.embedding, text.to(self.embedding))

    def explain(self, text: torch.Tensor, prompts: Optional[Sequence[str]] = None,
                return_weights: bool = False) -> Explanation:
        """text: (K, D) unit prompt embeddings (or (N, K, D) per image) -> Explanation with contributions
        (N, K, H, W); weights (N, K, 6, H, W) if requested (needs `weights` kept)."""
        text = text.to(self.contributions)
        if text.dim() not in (2, 3) or text.shape[-1] != self.embedding.shape[1]:
            raise ValueError(f"text embeddings must be (K, {self.embedding.shape[1]}) or (N, K, D), "
                             f"got {tuple(text.shape)}")
        check_text_for_images(text, self.embedding.shape[0])
        eq = "kd" if text.dim() == 2 else "nkd"
        contributions = torch.einsum(f"ndhw,{eq}->nkhw", self.contributions, text)
        weights = None
        if return_weights:
            if self.weights is None:
                raise ValueError("these ImageContributions were built without weights "
                                 "(image_contributions(..., keep_weights=True))")
            weights = torch.einsum(f"ndchw,{eq}->nkchw", self.weights, text)
        return Explanation(contributions=contributions, scores=self.scores(text), bias=project(self.bias, text),
                           images=self.images, weights=weights, prompts=list(prompts) if prompts else None)

    @staticmethod
    def cat(parts: List["ImageContributions"]) -> "ImageContributions":
        """Concatenate along the image dimension."""
        keep = all(p.weights is not None for p in parts)
        return ImageContributions(
            contributions=torch.cat([p.contributions for p in parts]), bias=torch.cat([p.bias for p in parts]),
            embedding=torch.cat([p.embedding for p in parts]), images=torch.cat([p.images for p in parts]),
            weights=torch.cat([p.weights for p in parts]) if keep else None)


def _one_chunk(model: BcosCLIP, images: torch.Tensor, d_chunk: int, keep_weights: bool) -> ImageContributions:
    x6 = encode_input(images, compute_dtype(model))
    u, bias = tower_pass(model, x6)
    contributions, weights = row_contributions(u, x6, d_chunk, keep_weights)
    return ImageContributions(contributions=contributions, bias=bias, embedding=u.detach(),
                              images=x6.detach()[:, :3], weights=weights)


@no_tf32()
def image_contributions(model: BcosCLIP, images: torch.Tensor, *, d_chunk: int = 64,
                        n_chunk: Optional[int] = None, keep_weights: bool = False) -> ImageContributions:
    """Build the contribution tensor of N images. images: (N, 3, H, W) in [0, 1] (or (N, 6, H, W)).

    d_chunk: basis vectors per batched backward; n_chunk: images per forward (both bound memory).
    """
    model = require_bcos(model)
    device = next(model.parameters()).device
    images = images.to(device)
    step = n_chunk or max(1, images.shape[0])
    parts = [_one_chunk(model, images[i:i + step], d_chunk, keep_weights)
             for i in range(0, images.shape[0], step)]
    return parts[0] if len(parts) == 1 else ImageContributions.cat(parts)


def contribution_tensor(model: BcosCLIP, images: torch.Tensor, *, d_chunk: int = 64,
                        n_chunk: Optional[int] = None) -> torch.Tensor:
    """M (N, D, H, W): contributions of any unit prompts T (K, D) are einsum("ndhw,kd->nkhw", M, T)
    (plus the bias of `image_contributions(...).bias @ T.T` for towers with additive terms)."""
    return image_contributions(model, images, d_chunk=d_chunk, n_chunk=n_chunk).contributions
