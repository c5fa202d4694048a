"""BcosCLIP: a B-cos image tower beside the frozen text tower of the CLIP it came from."""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.bcosify import BcosifySpec, ConversionReport, convert_tower
from bcos_clip.models.loading import make_tokenizer, model_source
from bcos_clip.models.preprocess import image_size, make_preprocess


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if images.shape[1] not in (3, 6):
        raise ValueError(f"images must have 3 channels in [0, 1] (or 6 = [x, 1-x]), got {images.shape[1]}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain non-finite values (NaN or inf)")


def text_tower_of(clip_model: nn.Module) -> nn.Module:
    """A frozen deep copy of a CLIP model without its image tower (encode_text keeps working)."""
    visual = clip_model.visual
    try:
        clip_model.visual = None
        text = copy.deepcopy(clip_model)
    finally:
        clip_model.visual = visual
    for p in text.parameters():
        p.requires_grad_(False)
    return text.eval()


class BcosCLIP(nn.Module):
    """B-cos image tower + frozen text tower + tokenizer + transforms + provenance.

    encode_image(images): (N, 3, H, W) in [0, 1] or (N, 6, H, W) = [x, 1-x] -> (N, D).
    encode_text(tokens): (M, L) token ids -> (M, D), through the frozen teacher text tower.
    """

    is_bcos = True

    def __init__(self, visual: nn.Module, text: nn.Module, spec: BcosifySpec, source: Dict[str, Any],
                 report: Optional[ConversionReport] = None) -> None:
        super().__init__()
        self.visual = visual
        self.text = text
        self.spec = spec
        self.source = source
        self.report = report
        pp = source["preprocess_cfg"]
        self.input_norm = (bnn.Normalize6(pp["mean"], pp["std"]) if spec.input_encoding == "normalize6"
                           else nn.Identity())
        self.tokenizer: Callable = make_tokenizer(source["model_cfg"])
        self.preprocess = make_preprocess(pp, normalize=False)
        self.teacher_preprocess = make_preprocess(pp, normalize=True)
        self.image_size = image_size(pp)

    @property
    def name(self) -> str:
        return str(self.source.get("name"))

    @property
    def pretrained(self) -> Optional[str]:
        return self.source.get("pretrained")

    @property
    def provenance(self) -> Dict[str, Any]:
        return {k: self.source.get(k) for k in ("name", "pretrained", "overrides")}

    @property
    def embed_dim(self) -> int:
        return int(self.source["model_cfg"]["embed_dim"])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.text.logit_scale

    def train(self, mode: bool = True) -> "BcosCLIP":
        super().train(mode)
        self.text.eval()  # the text tower is always the frozen teacher's
        return self

    def encode_image6(self, x6: torch.Tensor) -> torch.Tensor:
        """(N, 6, H, W) = [x, 1-x] -> unnormalised embedding (N, D)."""
        return self.visual(self.input_norm(x6))

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        check_images(images)
        x6 = bnn.add_inverse(images) if images.shape[1] == 3 else images
        out = self.encode_image6(x6)
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with torch.no_grad():
            return self.text.encode_text(tokens, normalize=normalize)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)


def bcosify(clip_model: nn.Module, b: float = 2.0, bias: bool = False, *,
            spec: Optional[BcosifySpec] = None, **spec_kwargs: Any) -> BcosCLIP:
    """Turn an open_clip CLIP (from `load_clip`) into a BcosCLIP; the original stays untouched.

    b: B of every converted layer; bias: keep biases (b=1, bias=True reproduces the original exactly).
    Further spec fields (attnpool_positional, qk, input_encoding, official_c_proj) as keywords.
    """
    spec = spec or BcosifySpec(b=b, bias=bias, **spec_kwargs)
    source = model_source(clip_model)
    pp = source["preprocess_cfg"]
    tower, report = convert_tower(clip_model.visual, spec, pp["mean"], pp["std"])
    tower.train(clip_model.visual.training)
    return BcosCLIP(tower, text_tower_of(clip_model), spec, source, report).train(clip_model.visual.training)
