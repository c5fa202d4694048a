"""Zero-shot classifier: class prompts (templates x classnames, or class-specific prompt lists) through
the text tower, cached; CLIP_benchmark's ``--save_clf`` / ``--load_clfs`` files.

W[:, c] = normalize(mean_t normalize(encode_text(prompt_t(classname_c)))), so that
logits = 100 * normalize(image_embedding) @ W (METHOD.md §5).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from bcos_clip.runtime.hashing import json_digest, text_tower_digest
from bcos_clip.runtime.precision import autocast
from bcos_clip.models.text import format_template, unit_text_embeddings
from bcos_clip.models.torch_files import load_tensors

log = logging.getLogger(__name__)

Template = Union[str, Callable[[str], str]]
# A list of templates for every class, or (CuPL-style, CLIP_benchmark's custom template files) a
# mapping {classname: [prompts]} of class-specific prompts.
Templates = Union[Sequence[Template], Dict[str, Sequence[str]]]


def class_texts(classnames: Sequence[str], templates: Templates) -> List[List[str]]:
    """The prompts of each class: every template filled in (``{c}``, ``{}``, callables), or the class's
    own prompt list when ``templates`` maps class names to prompts."""
    if not templates:
        raise ValueError("no zero-shot templates")
    if isinstance(templates, dict):
        missing = [c for c in classnames if not templates.get(c)]
        if missing:
            raise ValueError(f"the class-specific prompts have no entry for class {missing[0]!r}")
        return [[str(p) for p in templates[c]] for c in classnames]
    return [[format_template(t, c) for t in templates] for c in classnames]


def class_prompts(classnames: Sequence[str], templates: Templates) -> List[str]:
    """All prompts, class-major (index c * T + t for a template list)."""
    return [p for texts in class_texts(classnames, templates) for p in texts]


def templates_key(templates: Templates) -> Any:
    """A JSON-able form of ``templates`` (callables as their output for ``{c}``), for digests."""
    if isinstance(templates, dict):
        return {str(k): [str(p) for p in v] for k, v in sorted(templates.items())}
    return class_prompts(["{c}"], templates)


def tokenizer_context_length(tokenizer: Any) -> Optional[int]:
    """The tokenizer's context length (open_clip tokenizers carry ``context_length``)."""
    return getattr(tokenizer, "context_length", None)


@torch.no_grad()
def encode_texts(model: Any, texts: Sequence[str], device: torch.device, batch_size: int = 256,
                 precision: str = "fp32") -> torch.Tensor:
    """Unit text embeddings of ``texts`` (captions, no template): (len(texts), D) float32 on CPU,
    normalised once (as CLIP_benchmark's retrieval does)."""
    with autocast(precision, device):
        return unit_text_embeddings(model, texts, device, batch_size).cpu()


@torch.no_grad()
def build_classifier(model: Any, classnames: Sequence[str], templates: Templates,
                     device: torch.device, precision: str = "fp32", batch_size: int = 256) -> torch.Tensor:
    """Zero-shot weights W: (D, C) float32 on CPU, unit-norm columns (each class's prompts averaged)."""
    texts = class_texts(classnames, templates)
    sizes = [len(t) for t in texts]
    with autocast(precision, device):
        emb = unit_text_embeddings(model, [p for t in texts for p in t], device, batch_size)
    if len(set(sizes)) == 1:
        mean = emb.view(len(texts), sizes[0], -1).mean(1)
    else:
        mean = torch.stack([part.mean(0) for part in emb.split(sizes)])
    return F.normalize(mean, dim=-1).float().cpu().T.contiguous()


def load_classifiers(paths: Sequence[str], dim: int, num_classes: int) -> torch.Tensor:
    """CLIP_benchmark's ``--load_clfs``: the mean of the (D, C) classifiers saved in ``paths`` (each
    divided by their number and summed, as theirs; read weights-only). Returns (D, C) float32."""
    total: Optional[torch.Tensor] = None
    for path in paths:
        w = load_tensors(path, "--load_clfs classifier")
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (dim, num_classes):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"--load_clfs {path}: expected a ({dim}, {num_classes}) tensor "
                             f"(embedding dim, classes), got {shape}")
        part = w.float() / len(paths)
        total = part if total is None else total + part
    assert total is not None
    return total


def save_classifier(weights: torch.Tensor, path: Path) -> Path:
    """CLIP_benchmark's ``--save_clf``: ``torch.save`` of the (D, C) classifier tensor."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights.detach().cpu(), path)
    log.info("zero-shot classifier saved to %s", path)
    return path


def classifier_key(model: Any, classnames: Sequence[str], templates: Templates,
                   precision: str, text_digest: Optional[str] = None) -> str:
    """Cache key: text tower weights, tokenizer (type, context length), prompts, precision."""
    return json_digest({
        "text_tower": text_digest or text_tower_digest(model),
        "tokenizer": [type(model.tokenizer).__name__, tokenizer_context_length(model.tokenizer)],
        "classnames": list(classnames),
        "templates": templates_key(templates),
        "precision": precision,
    })


def cached_classifier(model: Any, classnames: Sequence[str], templates: Templates,
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
