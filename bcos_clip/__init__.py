"""bcos_clip: B-cosify the image tower of open_clip CLIP models, distil, benchmark and explain it."""
from bcos_clip.explain import Explanation, explain
from bcos_clip.models import (BcosCLIP, PlainCLIP, bcosify, load, load_clip, recalibrate_batchnorm, resolve_model,
                              save)
from bcos_clip.nn import explanation_mode

__version__ = "0.1.0"
__all__ = ["BcosCLIP", "Explanation", "PlainCLIP", "bcosify", "explain", "explanation_mode", "load",
           "load_clip", "recalibrate_batchnorm", "resolve_model", "save", "__version__"]
