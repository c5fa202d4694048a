"""Prompt embeddings through a frozen text tower: templates x prompts, averaged and renormalised."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

Template = Union[str, Callable[[str], str]]
DEFAULT_TEMPLATES = ("a photo of {}.",)
# CLIP's logit scale: exp(t) of its learned temperature, clamped at 100 (the released models sit there).
# Zero-shot logits, the confidence softmax(100 cos) of the pointing game and explain's "probs" use it.
CLIP_LOGIT_SCALE = 100.0


def format_template(template: Template, text: str) -> str:
    """CLIP_benchmark templates use `{c}`, open_clip's `{}` or callables: all are accepted."""
    if callable(template):
        return template(text)
    if "{c}" in template:
        return template.replace("{c}", text)
    if "{}" in template:
        return template.replace("{}", text)
    raise ValueError(f"template {template!r} has no '{{}}' or '{{c}}' placeholder")


@torch.no_grad()
def encode_prompts(model, prompts: Sequence[str], templates: Optional[Sequence[Template]] = None,
                   batch_size: int = 256, device: Optional[torch.device] = None) -> torch.Tensor:
    """(K,) prompts -> (K, D) unit text embeddings, each the renormalised mean over templates.

    model: anything with `.encode_text(tokens)` and `.tokenizer` (BcosCLIP, PlainCLIP).
    """
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    templates = list(templates) if templates else list(DEFAULT_TEMPLATES)
    texts = [format_template(t, p) for p in prompts for t in templates]
    if device is None:
        device = next(iter(model.parameters())).device
    emb = unit_text_embeddings(model, texts, device, batch_size).view(len(prompts), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)


def unit_text_embeddings(model, texts: Sequence[str], device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """(len(texts), D) float32 unit text embeddings (no template), encoded ``batch_size`` texts at a time."""
    chunks = []
    for i in range(0, len(texts), batch_size):
        tokens = model.tokenizer(list(texts[i:i + batch_size])).to(device)
        chunks.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    return torch.cat(chunks)
