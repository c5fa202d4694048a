"""The ModifiedResNet attention pool, B-cosified (METHOD.md §2, RN50 specifics).

The mean token is prepended to the HW tokens; the query is the mean token, keys and values are all
tokens. The attention matrix is a dynamic factor (detached in explanation mode) and c_proj is called
as a module, so its B-cos scale runs (the official code bypasses it).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from bcos_clip.nn.attention import attention_weights
from bcos_clip.nn.bcos_linear import BcosLinear
from bcos_clip.nn.dynamic import DynamicModule

Proj = Union[BcosLinear, nn.Linear]


class BcosAttentionPool2d(DynamicModule):
    """(N, C, H, W) feature map -> (N, output_dim) embedding."""

    def __init__(self, q_proj: Proj, k_proj: Proj, v_proj: Proj, c_proj: Proj, num_heads: int,
                 positional_embedding: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.c_proj = q_proj, k_proj, v_proj, c_proj
        self.num_heads = num_heads
        if positional_embedding is not None:
            self.positional_embedding = nn.Parameter(positional_embedding.detach().clone())
        else:
            self.positional_embedding = None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        n, l, d = t.shape
        return t.view(n, l, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (N, HW+1, C)
        if self.positional_embedding is not None:
            if self.positional_embedding.shape[0] != tokens.shape[1]:
                raise ValueError(
                    f"attention pool: positional embedding has {self.positional_embedding.shape[0]} "
                    f"tokens but the feature map gives {tokens.shape[1]} (input resolution changed?)")
            tokens = tokens + self.positional_embedding.to(tokens.dtype)
        v = self._heads(self.v_proj(tokens))
        attn = self.dynamic(lambda: attention_weights(
            self._heads(self.q_proj(tokens[:, :1])), self._heads(self.k_proj(tokens))))
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, 1, c)
        return self.c_proj(out)[:, 0]
