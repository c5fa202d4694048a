"""PlainCLIP: a standard open_clip CLIP behind the same interface as BcosCLIP (images in [0, 1]).

Evaluation and the post-hoc baselines treat teacher and student alike through this interface.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn

from bcos_clip.models.bcos_model import BcosCLIP, check_images
from bcos_clip.models.hf_clip import is_hf_clip_dir
from bcos_clip.models.loading import load_clip, model_source
from bcos_clip.models.preprocess import image_size, make_preprocess


class PlainCLIP(nn.Module):
    """encode_image(images): (N, 3, H, W) in [0, 1] -> (N, D); normalised with CLIP mean/std inside."""

    is_bcos = False

    def __init__(self, clip_model: nn.Module, tokenizer: Callable, source: Dict[str, Any]) -> None:
        super().__init__()
        self.clip = clip_model
        self.source = source
        self.tokenizer = tokenizer
        pp = source["preprocess_cfg"]
        self.register_buffer("mean", torch.tensor(pp["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pp["std"], dtype=torch.float32).view(1, 3, 1, 1))
        self.preprocess = make_preprocess(pp, normalize=False)
        self.teacher_preprocess = make_preprocess(pp, normalize=True)
        self.image_size = image_size(pp)

    @classmethod
    def from_clip(cls, clip_model: nn.Module, tokenizer: Callable) -> "PlainCLIP":
        return cls(clip_model, tokenizer, model_source(clip_model))

    name = property(lambda self: str(self.source.get("name")))
    pretrained = property(lambda self: self.source.get("pretrained"))
    embed_dim = property(lambda self: int(self.source["model_cfg"]["embed_dim"]))
    visual = property(lambda self: self.clip.visual)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        check_images(images)
        if images.shape[1] != 3:
            raise ValueError(f"a plain CLIP takes 3-channel images in [0, 1], got {images.shape[1]} channels")
        return self.clip.encode_image(self.normalize_images(images), normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.clip.encode_text(tokens, normalize=normalize)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)


ImageTextModel = Union[BcosCLIP, PlainCLIP]


def resolve_model(model: str, pretrained: Optional[str] = None, *, cache_dir: Optional[str] = None,
                  **overrides: Any) -> ImageTextModel:
    """A bcos_clip checkpoint directory -> BcosCLIP; an open_clip name / JSON config -> PlainCLIP.
    ``cache_dir``: where open_clip keeps downloaded weights."""
    from bcos_clip.models.checkpoint import is_checkpoint_dir, load  # local: checkpoint imports plain

    if is_checkpoint_dir(model):
        if pretrained:
            raise ValueError(f"--pretrained is not used with a bcos_clip checkpoint directory ({model})")
        return load(model)
    if Path(model).is_dir() and not is_hf_clip_dir(model):  # a transformers CLIP folder is a teacher
        raise FileNotFoundError(f"{model} is a directory but holds no bcos_clip checkpoint (config.json + "
                                "model.safetensors)")
    clip_model, _, tokenizer = load_clip(model, pretrained, cache_dir=cache_dir, **overrides)
    clip_model.requires_grad_(False)
    return PlainCLIP.from_clip(clip_model, tokenizer)
