"""Multi-head self-attention for B-cos ViT towers, with the attention matrix as a dynamic factor.

In explanation mode the softmax matrix is detached (q and k only set it), so attention is a constant
linear map on the (B-cos) value projection (METHOD.md §2, ViT).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from bcos_clip.nn.bcos_linear import BcosLinear
from bcos_clip.nn.dynamic import DynamicModule
from bcos_clip.nn.functional import at_least_fp32

Proj = Union[BcosLinear, nn.Linear]


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)): q (N, h, Lq, d), k (N, h, L, d) -> (N, h, Lq, L).

    The softmax runs in at least fp32 (half / bf16 logits are upcast); float64 stays float64."""
    logits = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        logits = logits + mask
    return at_least_fp32(logits).softmax(-1).to(q.dtype)


class BcosSelfAttention(DynamicModule):
    """Self-attention on (N, L, D) tokens with separate q/k/v/out projections."""

    def __init__(self, q_proj: Proj, k_proj: Proj, v_proj: Proj, out_proj: Proj, num_heads: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        self.num_heads = num_heads

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        n, l, d = t.shape
        return t.view(n, l, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, l, _ = x.shape
        v = self._heads(self.v_proj(x))
        if self._dyn_mode is None and not self.detach_dynamic:
            # Plain forward: the fused kernel computes the same function (gradients included).
            q, k = self._heads(self.q_proj(x)), self._heads(self.k_proj(x))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            attn = self.dynamic(lambda: attention_weights(
                self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), attn_mask))
            out = torch.matmul(attn, v)
        return self.out_proj(out.transpose(1, 2).reshape(n, l, -1))
