"""Explanations: contributions for many prompts in one pass, pictures, localisation, baselines."""
from bcos_clip.explain.contributions import ImageContributions, contribution_tensor, image_contributions
from bcos_clip.explain.core import explain, require_bcos
from bcos_clip.explain.explanation import Explanation
from bcos_clip.explain.prompts import prompt_embeddings, resolve_templates

__all__ = ["Explanation", "ImageContributions", "contribution_tensor", "explain", "image_contributions",
           "prompt_embeddings", "require_bcos", "resolve_templates"]
