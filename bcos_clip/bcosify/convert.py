"""Convert an open_clip image tower: dispatch on the tower's type."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn

from bcos_clip.bcosify.report import ConversionReport
from bcos_clip.bcosify.resnet import convert_modified_resnet
from bcos_clip.bcosify.spec import BcosifySpec
from bcos_clip.bcosify.vit import convert_vision_transformer

Converter = Callable[[nn.Module, BcosifySpec, Sequence[float], Sequence[float]],
                     Tuple[nn.Module, ConversionReport]]

TOWER_CONVERTERS: Dict[type, Converter] = {
    ModifiedResNet: convert_modified_resnet,
    VisionTransformer: convert_vision_transformer,
}


def convert_tower(visual: nn.Module, spec: BcosifySpec, mean: Sequence[float],
                  std: Sequence[float]) -> Tuple[nn.Module, ConversionReport]:
    """B-cosify an image tower; the original is left untouched.

    Returns the new tower (input (N, 6, H, W) = [x, 1-x] in [0, 1]) and the conversion report.
    """
    for tower_type, converter in TOWER_CONVERTERS.items():
        if type(visual) is tower_type:
            return converter(visual, spec, mean, std)
    supported = ", ".join(t.__name__ for t in TOWER_CONVERTERS)
    raise ValueError(f"bcosify: unsupported image tower {type(visual).__module__}."
                     f"{type(visual).__name__}; supported: {supported}")
