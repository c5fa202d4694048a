"""The result of an explanation: per-pixel contributions, scores and the measured bias."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch


@dataclass
class Explanation:
    """contributions (N, K, H, W); scores (N, K); bias (N, K); weights (N, K, 6, H, W) or None;
    images (N, 3, H, W) in [0, 1]; prompts: the K prompt strings (or None for given embeddings).

    contributions.sum((-2, -1)) + bias == scores (METHOD.md §4); `bias` comes from its own replay pass.
    """

    contributions: torch.Tensor
    scores: torch.Tensor
    bias: torch.Tensor
    images: torch.Tensor
    weights: Optional[torch.Tensor] = None
    prompts: Optional[list] = None

    def completeness_error(self) -> torch.Tensor:
        """|sum(contributions) + bias - scores| per (n, k)."""
        return (self.contributions.sum((-2, -1)) + self.bias - self.scores).abs()

    def to(self, device: torch.device | str) -> "Explanation":
        """A copy with every tensor on `device`."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def cpu(self) -> "Explanation":
        return self.to("cpu")
