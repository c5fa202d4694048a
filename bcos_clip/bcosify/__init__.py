"""The tower converter: open_clip image towers -> B-cos towers, every pretrained weight copied."""
from bcos_clip.bcosify.convert import TOWER_CONVERTERS, convert_tower
from bcos_clip.bcosify.report import ConversionReport
from bcos_clip.bcosify.spec import BcosifySpec

__all__ = ["BcosifySpec", "ConversionReport", "TOWER_CONVERTERS", "convert_tower"]
