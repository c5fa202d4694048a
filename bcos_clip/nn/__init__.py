"""B-cos layers: one concept a file. Imports torch only."""
from bcos_clip.nn.activations import GatedActivation
from bcos_clip.nn.attention import BcosSelfAttention
from bcos_clip.nn.attention_pool import BcosAttentionPool2d
from bcos_clip.nn.bcos_conv import BcosConv2d
from bcos_clip.nn.bcos_linear import BcosLinear
from bcos_clip.nn.conv_stem import ConvStem
from bcos_clip.nn.dynamic import (DynamicModule, clear_recorded, dynamic_mode, dynamic_modules,
                                  explanation_mode)
from bcos_clip.nn.fold import fold_batchnorms
from bcos_clip.nn.functional import bcos_factor, patch_norm, vector_norm
from bcos_clip.nn.fused import fast_path, fast_path_enabled, set_fast_path
from bcos_clip.nn.input_encoding import AddInverse, Normalize6, add_inverse, fold_normalization
from bcos_clip.nn.norms import BcosLayerNorm, UncenteredBatchNorm2d

__all__ = [
    "AddInverse", "BcosAttentionPool2d", "BcosConv2d", "BcosLayerNorm", "BcosLinear",
    "BcosSelfAttention", "ConvStem", "DynamicModule", "GatedActivation", "Normalize6", "UncenteredBatchNorm2d",
    "add_inverse", "bcos_factor", "clear_recorded", "dynamic_mode", "dynamic_modules",
    "explanation_mode", "fast_path", "fast_path_enabled", "fold_batchnorms", "fold_normalization",
    "patch_norm", "set_fast_path", "vector_norm",
]
