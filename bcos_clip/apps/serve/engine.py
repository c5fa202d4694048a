"""The computation behind `bcos-clip serve`: methods, caches, timings.

A method turns one image into a cached per-image state (`prepare`, the only step that runs an image
tower) and answers any prompt set from that state (`explain`). For the B-cos student the state is the
per-pixel contribution tensor (`bcos_clip.explain.ImageContributions`): a new prompt on a cached image
costs one text encoding and one einsum. States live in a bounded LRU keyed by (method, sha256 of the
upload bytes); prompt embeddings in a second, small LRU.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from bcos_clip.apps.serve.cache import LRUCache, nbytes
from bcos_clip.apps.serve.io import Limits, decode_image, image_hash
from bcos_clip.apps.serve.methods import Method
from bcos_clip.explain import Explanation, prompt_embeddings

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of {}."


@dataclass(frozen=True)
class ExplainRequest:
    """One query: the upload's bytes, K prompts, a method name and a template with '{}'."""

    image: bytes
    prompts: Tuple[str, ...]
    method: str = "bcos"
    template: str = DEFAULT_TEMPLATE


@dataclass
class ExplainResult:
    """explanation: contributions (1, K, H, W), scores/bias (1, K), weights (1, K, 6, H, W) or None,
    images (1, 3, H, W) in [0, 1], all on the CPU. timings_ms: decode, image_tower, text, explain."""

    image_id: str
    method: str
    method_label: str
    is_bcos: bool
    prompts: List[str]
    template: str
    explanation: Explanation
    cache_hit: bool
    timings_ms: Dict[str, float] = field(default_factory=dict)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class ExplainEngine:
    """Methods by name, the per-image state LRU and the prompt-embedding LRU; one query at a time.

    cache_entries / cache_mb bound the per-image states (tensor bytes); text_entries the embeddings.
    """

    def __init__(self, methods: Sequence[Method], cache_entries: int = 16, cache_mb: Optional[float] = 2048,
                 text_entries: int = 4096) -> None:
        if not methods:
            raise ValueError("the explorer needs at least one method")
        self.methods: Dict[str, Method] = {m.name: m for m in methods}
        self.default_method = methods[0].name
        max_bytes = None if cache_mb is None else int(cache_mb * 1024 * 1024)
        self.states: LRUCache[Any] = LRUCache(cache_entries, max_bytes)
        self.texts: LRUCache[torch.Tensor] = LRUCache(text_entries)
        self._lock = threading.Lock()

    def info(self) -> Dict[str, Any]:
        """What /health reports: methods, the default, cache statistics."""
        return {"methods": [{"name": m.name, "label": m.label, "is_bcos": m.is_bcos}
                            for m in self.methods.values()],
                "default_method": self.default_method, "cache": self.states.stats(),
                "text_cache": self.texts.stats()}

    def _text(self, method: Method, prompts: Sequence[str], template: str) -> torch.Tensor:
        """(K, D) unit embeddings through the method model's text tower, cached per prompt."""
        keys = [(id(method.model), template, p) for p in prompts]
        found = {k: self.texts.get(k) for k in keys}
        missing = [k for k in keys if found[k] is None]
        if missing:
            new = prompt_embeddings(method.model, [k[2] for k in missing], template, _device_of(method.model))
            for k, emb in zip(missing, new):
                self.texts.put(k, emb)
                found[k] = emb
        return torch.stack([found[k] for k in keys])

    def _prepare(self, method: Method, key: Tuple[str, str], data: bytes,
                 limits: Limits) -> Tuple[Any, bool, Dict[str, float]]:
        timings = {"decode": 0.0, "image_tower": 0.0}
        state = self.states.get(key)
        if state is not None:
            return state, True, timings
        start = time.perf_counter()
        image = decode_image(data, limits)
        images = method.model.preprocess(image).unsqueeze(0).to(_device_of(method.model))
        timings["decode"] = _ms(start)
        start = time.perf_counter()
        state = method.prepare(images)
        timings["image_tower"] = _ms(start)
        return state, False, timings

    def explain(self, request: ExplainRequest, limits: Limits = Limits()) -> ExplainResult:
        """Decode (on a cache miss), prepare (on a miss), encode the prompts, explain. Raises RequestError
        for a bad image, KeyError for an unknown method."""
        method = self.methods[request.method]
        image_id = image_hash(request.image)
        key = (method.name, image_id)
        with self._lock:
            state, hit, timings = self._prepare(method, key, request.image, limits)
            start = time.perf_counter()
            text = self._text(method, request.prompts, request.template)
            timings["text"] = _ms(start)
            start = time.perf_counter()
            explanation = method.explain(state, text, request.prompts).cpu()
            timings["explain"] = _ms(start)
            self.states.put(key, state)  # (re)insert: a per-prompt state grows with each new prompt
            if key not in self.states and self.states.max_entries > 0:
                log.warning("the state of one image (%.1f MiB) exceeds the image cache budget: not cached "
                            "(raise --cache-mb, or --no-color to keep 6x less)", nbytes(state) / 2**20)
        log.debug("explain %s K=%d hit=%s %s", method.name, len(request.prompts), hit, timings)
        return ExplainResult(image_id=image_id, method=method.name, method_label=method.label,
                             is_bcos=method.is_bcos, prompts=list(request.prompts), template=request.template,
                             explanation=explanation, cache_hit=hit, timings_ms=timings)
