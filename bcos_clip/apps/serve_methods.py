"""The explanation methods the explorer offers: the B-cos student and post-hoc baselines on the teacher.

A method splits into `prepare` (per image, the result cached by the engine) and `explain` (per prompt
set, from the cached state):
- B-cos: the state is the per-pixel contribution tensor (`ImageContributions`, D Jacobian rows once);
  any prompt set is then one einsum, the image tower never runs again.
- Baselines (`bcos_clip.explain.baselines.BASELINES`): post-hoc maps need their own backward passes per
  prompt, so the state keeps the image, its embedding (for the scores) and every map computed so far;
  only prompts not seen on that image are computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Protocol, Sequence

import torch
import torch.nn.functional as F

from bcos_clip.apps.serve_io import RequestError
from bcos_clip.explain import Explanation, image_contributions
from bcos_clip.explain.baselines import BASELINES, Attribution
from bcos_clip.models import BcosCLIP

BASELINE_LABELS = {"gradient": "Gradient", "input_x_gradient": "Input×Gradient",
                   "integrated_gradients": "Integrated Gradients", "gradcam": "GradCAM"}


def check_embedding(embedding: torch.Tensor, label: str) -> None:
    """A zero or non-finite image embedding leaves nothing to explain (cosines undefined): a 422."""
    if not torch.isfinite(embedding).all():
        raise RequestError(422, f"{label}: the image embedding is zero or not finite for this image, so "
                                "cosines and explanations are undefined (an untrained or broken checkpoint?)")


class Method(Protocol):
    name: str
    label: str
    is_bcos: bool
    model: torch.nn.Module

    def prepare(self, images: torch.Tensor) -> Any:
        """images (1, 3, H, W) in [0, 1] on the model's device -> the per-image state to cache."""

    def explain(self, state: Any, text: torch.Tensor, prompts: Sequence[str]) -> Explanation:
        """text (K, D) unit embeddings -> Explanation for the K prompts (N = 1)."""


class BcosMethod:
    """The B-cos student: state = ImageContributions (D Jacobian rows once), then one einsum a query.

    colour=True keeps the per-channel dynamic weights too (6x the memory), which the colour
    explanation of a new prompt needs; colour=False serves contribution heat maps only.
    """

    is_bcos = True

    def __init__(self, model: BcosCLIP, colour: bool = True, d_chunk: int = 64) -> None:
        self.model = model
        self.colour = colour
        self.d_chunk = d_chunk
        self.name = "bcos"
        self.label = f"B-cos student ({model.name})"

    def prepare(self, images: torch.Tensor) -> Any:
        state = image_contributions(self.model, images, d_chunk=self.d_chunk, keep_weights=self.colour)
        check_embedding(state.embedding, self.label)
        return state

    def explain(self, state: Any, text: torch.Tensor, prompts: Sequence[str]) -> Explanation:
        with torch.no_grad():
            return state.explain(text, prompts=list(prompts), return_weights=self.colour)


@dataclass
class BaselineState:
    """images (1, 3, H, W) in [0, 1]; embedding (1, D) unit; maps: prompt-embedding bytes -> (H, W)."""

    images: torch.Tensor
    embedding: torch.Tensor
    maps: Dict[bytes, torch.Tensor] = field(default_factory=dict)


class BaselineMethod:
    """A post-hoc attribution on the plain teacher: maps computed only for prompts new to the image."""

    is_bcos = False

    def __init__(self, model: torch.nn.Module, name: str, fn: Attribution) -> None:
        self.model = model
        self.name = name
        self.fn = fn
        self.label = f"{BASELINE_LABELS.get(name, name)} on the teacher ({getattr(model, 'name', 'CLIP')})"

    def prepare(self, images: torch.Tensor) -> BaselineState:
        with torch.no_grad():
            raw = self.model.encode_image(images).float()
        check_embedding(raw / raw.norm(dim=-1, keepdim=True), self.label)
        embedding = F.normalize(raw, dim=-1)
        return BaselineState(images=images.detach(), embedding=embedding)

    def explain(self, state: BaselineState, text: torch.Tensor, prompts: Sequence[str]) -> Explanation:
        keys = [t.detach().cpu().numpy().tobytes() for t in text]
        missing = [i for i, k in enumerate(keys) if k not in state.maps and keys.index(k) == i]
        if missing:
            new = self.fn(self.model, state.images, text[missing]).detach()[0]  # (k, H, W)
            for i, m in zip(missing, new):
                state.maps[keys[i]] = m
        maps = torch.stack([state.maps[k] for k in keys])[None]
        scores = state.embedding @ text.T
        return Explanation(contributions=maps, scores=scores, bias=torch.zeros_like(scores),
                           images=state.images, prompts=list(prompts))


def baseline_methods(teacher: torch.nn.Module, names: Sequence[str] = ()) -> List[BaselineMethod]:
    """One BaselineMethod per name in `names` (default: every entry of BASELINES)."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    return [BaselineMethod(teacher, n, BASELINES[n]) for n in (names or BASELINES)]
