"""Frozen text embeddings for the ``text_kd`` loss: the batch's captions or fixed class prompts.

- ``captions``: the distinct captions of each batch through the frozen text tower, optionally cached
  on disk by caption hash (``--text-cache DIR``; safetensors chunks, tied to the text tower by its
  sha256 digest, ``runtime.hashing.text_tower_digest``, so that a cache from another model is refused).
- ``classnames``: class names (a ``--classnames`` file, one a line, else open_clip's 1000 ImageNet
  names) x templates, embedded once at start-up; the image's ``cls`` picks its own prompt.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from bcos_clip.models import encode_prompts
from bcos_clip.models.imagenet_prompts import TEMPLATE_SETS, imagenet_classnames_and_templates

log = logging.getLogger(__name__)
Tensor = torch.Tensor


def caption_hash(text: str) -> bytes:
    """20-byte SHA-1 of the UTF-8 caption (the cache key)."""
    return hashlib.sha1(text.encode("utf-8")).digest()


class CaptionCache:
    """Caption hash -> unit embedding (float16, CPU), persisted as safetensors chunks in a folder."""

    def __init__(self, directory: Optional[str], fingerprint: str) -> None:
        self.directory = Path(directory) if directory else None
        self.table: Dict[bytes, Tensor] = {}
        self.pending: Dict[bytes, Tensor] = {}
        self.chunks_written = 0
        if self.directory is not None:
            self._open(fingerprint)

    def _open(self, fingerprint: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = self.directory / "fingerprint.txt"
        if stamp.is_file() and stamp.read_text().strip() != fingerprint:
            raise ValueError(f"--text-cache {self.directory}: made with another text tower "
                             f"({stamp} differs); use a new folder")
        stamp.write_text(fingerprint)
        for path in sorted(self.directory.glob("chunk-*.safetensors")):
            try:
                data = load_file(str(path))
            except Exception as exc:  # safetensors' own error types; never a pickle
                raise ValueError(f"--text-cache {path}: not a readable cache chunk "
                                 f"({str(exc).strip().splitlines()[0]}); delete it to recompute") from None
            for h, e in zip(data["hash"], data["emb"]):
                self.table[bytes(h.tolist())] = e
        self.chunks_written = len(list(self.directory.glob("chunk-*.safetensors")))
        log.info("text cache %s: %d captions", self.directory, len(self.table))

    def get(self, key: bytes) -> Optional[Tensor]:
        return self.table.get(key)

    def put(self, key: bytes, emb: Tensor) -> None:
        if self.directory is None:
            return
        value = emb.detach().to("cpu", torch.float16)
        self.table[key] = value
        self.pending[key] = value

    def flush(self, tag: str) -> None:
        """Write the entries added since the last flush as a new chunk."""
        if self.directory is None or not self.pending:
            return
        hashes = torch.tensor([list(k) for k in self.pending], dtype=torch.uint8)
        emb = torch.stack(list(self.pending.values()))
        path = self.directory / f"chunk-{tag}-{self.chunks_written:06d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({"hash": hashes, "emb": emb}, str(tmp))
        tmp.replace(path)
        self.chunks_written += 1
        self.pending.clear()


class TextTargets:
    """Per batch: the (K, D) text embeddings and each image's own index for ``text_kd``."""

    def __init__(self, model, mode: str, device: torch.device, cache: Optional[CaptionCache] = None,
                 class_embeddings: Optional[Tensor] = None) -> None:
        self.model, self.mode, self.device = model, mode, device
        self.cache = cache or CaptionCache(None, "")
        self.class_embeddings = class_embeddings

    @torch.no_grad()
    def _embed(self, texts: List[str]) -> Tensor:
        keys = [caption_hash(t) for t in texts]
        found = [self.cache.get(k) for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            tokens = self.model.tokenizer([texts[i] for i in todo]).to(self.device)
            fresh = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            for j, i in enumerate(todo):
                found[i] = fresh[j]
                self.cache.put(keys[i], fresh[j])
        return torch.stack([f.to(self.device, torch.float32) for f in found])

    def for_batch(self, captions: Sequence[Optional[str]],
                  labels: Tensor) -> Tuple[Optional[Tensor], Tensor]:
        """Text embeddings (K, D) (None when the batch has no caption) and own indices (N,) (-1: none)."""
        if self.mode == "classnames":
            k = self.class_embeddings.shape[0]
            own = torch.where((labels >= 0) & (labels < k), labels, torch.full_like(labels, -1))
            return self.class_embeddings, own.to(self.device)
        distinct = sorted({c for c in captions if c})
        index = {c: i for i, c in enumerate(distinct)}
        own = torch.tensor([index[c] if c else -1 for c in captions], dtype=torch.long, device=self.device)
        if not distinct:
            return None, own
        return self._embed(distinct), own


def _nonempty_lines(path: str, flag: str, what: str, missing: str) -> List[str]:
    """The stripped, non-empty lines of a UTF-8 file; FileNotFoundError (``missing``) or ValueError naming ``flag``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(missing)
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{flag} {path}: no {what} in the file")
    return lines


def read_classnames(path: str) -> List[str]:
    return _nonempty_lines(path, "--classnames", "class names", f"--classnames: {path} not found")


def resolve_prompts(classnames: Optional[str], templates: str) -> Tuple[List[str], list]:
    """Class names and templates: a names file or ImageNet; a template set name or a templates file."""
    names, default_templates = imagenet_classnames_and_templates(templates if templates in TEMPLATE_SETS
                                                                 else "openai")
    if classnames:
        names = read_classnames(classnames)
    if templates in TEMPLATE_SETS:
        return names, default_templates
    return names, _nonempty_lines(templates, "--templates", "templates",
                                  f"--templates {templates!r}: neither {TEMPLATE_SETS} nor a file")


def class_prompt_embeddings(model, classnames: Optional[str], templates: str,
                            device: torch.device) -> Tensor:
    """(C, D) unit embeddings: each class name averaged over the templates."""
    names, tmpl = resolve_prompts(classnames, templates)
    log.info("text_kd targets: %d class prompts x %d templates", len(names), len(tmpl))
    return encode_prompts(model, names, tmpl, device=device).to(device)
