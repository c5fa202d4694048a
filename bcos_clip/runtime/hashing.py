"""Content digests (sha256, hex): cache keys, result records, stage arguments, replica checks.

The one digest of a text tower is :func:`text_tower_digest` (zero-shot classifier caches, the caption
cache of ``text_kd``); of a model :func:`model_digest`; of files on disk :func:`file_digest`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Tuple, Union

import torch


def tensors_digest(named: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, dtype, shape, bytes) of named tensors, in the given order."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """sha256 of a JSON-serialisable object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """Digest of every parameter and buffer of ``model`` (the "checkpoint hash")."""
    return tensors_digest(sorted(model.state_dict().items()))


def text_tower_digest(model: torch.nn.Module) -> str:
    """Digest of the weights that ``encode_text`` uses: the state entries of sub-modules outside the
    image tower (no ``visual`` name component), named relative to their wrapper (``text.`` in
    BcosCLIP, ``clip.`` in PlainCLIP), so a student and its teacher share zero-shot classifiers."""
    named = [(k.split(".", 1)[1], v) for k, v in model.state_dict().items()
             if "." in k and "visual" not in k.split(".")]
    return tensors_digest(sorted(named, key=lambda kv: kv[0]))


def file_digest(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """SHA-256 (first 16 hex digits) of a file, or of every file under a folder (names included)."""
    h = hashlib.sha256()
    paths = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for p in paths:
        h.update(str(p.relative_to(path) if Path(path).is_dir() else p.name).encode())
        with open(p, "rb") as fh:
            while True:
                block = fh.read(chunk)
                if not block:
                    break
                h.update(block)
    return h.hexdigest()[:16]
