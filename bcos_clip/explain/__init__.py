"""Explanations: contributions for many prompts in one pass, pictures, localisation, baselines."""
from bcos_clip.explain.core import Explanation, explain, require_bcos

__all__ = ["Explanation", "explain", "require_bcos"]
