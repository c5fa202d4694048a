"""Zero-shot classifier: class prompts (templates x classnames) through the text tower, cached.

W[:, c] = normalize(mean_t normalize(encode_text(template_t(classname_c)))), so that
logits = 100 * normalize(image_embedding) @ W (METHOD.md §5).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

import torch

from bcos_clip.runtime.hashing import json_digest, text_tower_digest
from bcos_clip.runtime.precision import autocast
from bcos_clip.models.text import format_template, encode_prompts
from bcos_clip.models.torch_files import load_tensors

log = logging.getLogger(__name__)

Template = Union[str, Callable[[str], str]]


def class_prompts(classnames: Sequence[str], templates: Sequence[Template]) -> List[str]:
    """All prompts, class-major: index c * T + t (``{c}``, ``{}`` and callable templates)."""
    if not templates:
        raise ValueError("no zero-shot templates")
    return [format_template(t, c) for c in classnames for t in templates]


def tokenizer_context_length(tokenizer: Any) -> Optional[int]:
    """The tokenizer's context length (open_clip tokenizers carry ``context_length``)."""
    return getattr(tokenizer, "context_length", None)


def encode_texts(model: Any, texts: Sequence[str], device: torch.device, batch_size: int = 256,
                 precision: str = "fp32") -> torch.Tensor:
    """Unit text embeddings of ``texts`` (captions, no template): (len(texts), D) float32 on CPU."""
    with autocast(precision, device):
        return encode_prompts(model, list(texts), ["{}"], batch_size, device).float().cpu()


def build_classifier(model: Any, classnames: Sequence[str], templates: Sequence[Template],
                     device: torch.device, precision: str = "fp32", batch_size: int = 256) -> torch.Tensor:
    """Zero-shot weights W: (D, C) float32 on CPU, unit-norm columns (templates averaged)."""
    if not templates:
        raise ValueError("no zero-shot templates")
    with autocast(precision, device):
        emb = encode_prompts(model, list(classnames), list(templates), batch_size, device)
    return emb.float().cpu().T.contiguous()


def classifier_key(model: Any, classnames: Sequence[str], templates: Sequence[Template],
                   precision: str, text_digest: Optional[str] = None) -> str:
    """Cache key: text tower weights, tokenizer (type, context length), prompts, precision."""
    return json_digest({
        "text_tower": text_digest or text_tower_digest(model),
        "tokenizer": [type(model.tokenizer).__name__, tokenizer_context_length(model.tokenizer)],
        "classnames": list(classnames),
        "templates": [t if isinstance(t, str) else class_prompts(["{c}"], [t])[0] for t in templates],
        "precision": precision,
    })


def cached_classifier(model: Any, classnames: Sequence[str], templates: Sequence[Template],
                      device: torch.device, cache_dir: Optional[Path], precision: str = "fp32",
                      text_digest: Optional[str] = None, write: bool = True) -> torch.Tensor:
    """:func:`build_classifier`, read from / written to ``cache_dir/classifiers/<key>.pt``.

    Returns W (D, C) float32 on CPU. ``write=False`` (non-zero ranks) only reads.
    """
    if cache_dir is None:
        return build_classifier(model, classnames, templates, device, precision)
    key = classifier_key(model, classnames, templates, precision, text_digest)
    path = Path(cache_dir) / "classifiers" / f"{key}.pt"
    if path.is_file():
        log.info("zero-shot classifier from cache %s", path)
        return load_tensors(path, "zero-shot classifier cache (delete it to recompute)")
    weights = build_classifier(model, classnames, templates, device, precision)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(weights, tmp)
        tmp.replace(path)
        log.info("zero-shot classifier cached at %s", path)
    return weights
