"""Prompts -> unit text embeddings: strings through the frozen text tower (templates averaged and
renormalised), or given embeddings checked and normalised."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Sequence, Union

import torch
import torch.nn.functional as F

from bcos_clip.models import DEFAULT_TEMPLATES, encode_prompts
from bcos_clip.models.imagenet_prompts import imagenet_classnames_and_templates
from bcos_clip.models.text import Template

Prompts = Union[Sequence[str], torch.Tensor]
Templates = Union[None, str, Sequence[Template]]

# Named template sets: "default" is CLIP's single prompt, "openai" open_clip's 80 ImageNet templates.
TEMPLATE_SETS: Dict[str, Callable[[], List[Template]]] = {
    "default": lambda: list(DEFAULT_TEMPLATES),
    "openai": lambda: imagenet_classnames_and_templates("openai")[1],
    "imagenet": lambda: imagenet_classnames_and_templates("openai")[1],
    "simple": lambda: imagenet_classnames_and_templates("simple")[1],
}


def resolve_templates(templates: Templates) -> List[Template]:
    """None -> ["a photo of {}."]; a set name (default, openai / imagenet = 80, simple = 7); a text file
    (one template a line, `{}` or `{c}`); one template string; or a list of templates / callables."""
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]()
        if "{" in templates:
            return [templates]
        path = Path(templates)
        if path.is_file():
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not lines:
                raise ValueError(f"templates file {path} is empty")
            return lines
        raise ValueError(f"templates {templates!r}: not a set name ({', '.join(TEMPLATE_SETS)}), "
                         "a template with '{}' / '{c}', or a file")
    out = list(templates)
    if not out:
        raise ValueError("templates: empty list (give None for the default 'a photo of {}.')")
    return out


def prompt_embeddings(model: torch.nn.Module, prompts: Prompts, templates: Templates,
                      device: torch.device) -> torch.Tensor:
    """K strings (encoded with templates) or a (K, D) / per-image (N, K, D) tensor -> unit fp32 embeddings
    (a float64 tensor stays float64).

    model: anything with `.encode_text`, `.tokenizer` and `.embed_dim` (BcosCLIP, PlainCLIP).
    """
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() not in (2, 3) or prompts.shape[-2] == 0:
            raise ValueError(f"prompt embeddings must be a non-empty (K, D) or (N, K, D) tensor, "
                             f"got {tuple(prompts.shape)}")
        if prompts.shape[-1] != model.embed_dim:
            raise ValueError(f"prompt embeddings have dimension {prompts.shape[-1]}, the model {model.embed_dim}")
        dtype = torch.float64 if prompts.dtype == torch.float64 else torch.float32
        return F.normalize(prompts.detach().to(device, dtype), dim=-1)
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings or a (K, D) tensor")
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("prompts must be non-empty strings")
    return encode_prompts(model, list(prompts), resolve_templates(templates), device=device)


def check_text_for_images(text: torch.Tensor, n_images: int) -> None:
    """Per-image prompt sets (N, K, D) must match the number of images."""
    if text.dim() == 3 and text.shape[0] != n_images:
        raise ValueError(f"per-image prompt embeddings for {text.shape[0]} images, got {n_images} images")
