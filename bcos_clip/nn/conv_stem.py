"""A convolutional stem for a ViT: the patch embedding as a stack of small convolutions.

``ConvStem([24, 48, 96], width=96)``: 3x3 stride-2 convs (each followed by BatchNorm and ReLU) through
the given channels, then a 1x1 conv to the token width; its total stride is the ViT's patch size
(2 ** len(channels)). Tiny ViTs trained from scratch learn much faster with it than with one strided
patch conv ("Early convolutions help transformers see better", Xiao et al. 2021). An open_clip
VisionTransformer calls ``self.conv1(x)`` and flattens the (N, width, H/p, W/p) output, so the stem
replaces ``visual.conv1`` unchanged otherwise (``bcos_clip.models.loading`` builds it from the config
key ``vision_cfg.conv_stem``; ``bcosify`` converts it layer by layer).
"""
from __future__ import annotations

from typing import Sequence, Tuple

from torch import nn


class ConvStem(nn.Sequential):
    """(N, C_in, H, W) -> (N, width, H / 2**k, W / 2**k) for ``k = len(channels)`` stride-2 stages."""

    def __init__(self, channels: Sequence[int], width: int, in_channels: int = 3) -> None:
        if not channels or any(int(c) < 1 for c in channels) or width < 1:
            raise ValueError(f"conv_stem: channels must be a non-empty list of positive ints, got {list(channels)}")
        layers = []
        c_in = in_channels
        for c in channels:
            layers += [nn.Conv2d(c_in, int(c), 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(int(c)),
                       nn.ReLU()]
            c_in = int(c)
        layers.append(nn.Conv2d(c_in, width, 1, bias=False))
        super().__init__(*layers)

    @classmethod
    def of(cls, layers: Sequence[nn.Module]) -> "ConvStem":
        """A stem holding ``layers`` as they are (a converted stem keeps the class, names and stride)."""
        stem = cls.__new__(cls)
        nn.Sequential.__init__(stem, *layers)
        return stem

    @property
    def stride(self) -> Tuple[int, int]:
        """The total stride (the patch size it stands for), as ``Conv2d.stride``."""
        sh = sw = 1
        for m in self:
            s = getattr(m, "stride", None)
            if s is not None and not isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
                sh, sw = sh * s[0], sw * s[1]
        return sh, sw
