"""The explanation methods the explorer offers: the B-cos student and post-hoc baselines on the teacher.

A method splits into `prepare` (per image, the result cached by the engine) and `explain` (per prompt
set, from the cached state):
- B-cos: the state is the per-pixel contribution tensor (`ImageContributions`, D Jacobian rows once);
  any prompt set is then one einsum, the image tower never runs again.
- B-cos, strategy "prompts" (large towers on a CPU): one forward + one Jacobian row per new prompt.
- Baselines (`bcos_clip.explain.baselines.BASELINES`): post-hoc maps need their own backward passes per
  prompt.
For the last two the state keeps the image (and the teacher's embedding, for the scores) and every
answer computed so far: only prompts not seen on that image are computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F

from bcos_clip.apps.serve.io import RequestError
from bcos_clip.explain import Explanation, explain, image_contributions
from bcos_clip.explain.baselines import BASELINES, Attribution
from bcos_clip.models import BcosCLIP, DegenerateEmbeddingError, check_image_embeddings

BASELINE_LABELS = {"gradient": "Gradient", "input_x_gradient": "Input×Gradient",
                   "integrated_gradients": "Integrated Gradients", "gradcam": "GradCAM"}


def degenerate_answer(label: str) -> RequestError:
    return RequestError(422, f"{label}: the image embedding is zero or not finite for this image, so cosines "
                             "and explanations are undefined (an untrained or broken checkpoint, or BatchNorm "
                             "statistics never refitted: bcos_clip.recalibrate_batchnorm)")


def check_embedding(embedding: torch.Tensor, label: str) -> None:
    """A zero or non-finite image embedding (N, D) leaves nothing to explain (cosines undefined): a 422."""
    try:
        check_image_embeddings(embedding, label)
    except DegenerateEmbeddingError:
        raise degenerate_answer(label) from None


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

    def __init__(self, model: BcosCLIP, color: bool = True, d_chunk: int = 64) -> None:
        self.model = model
        self.color = color
        self.d_chunk = d_chunk
        self.name = "bcos"
        self.label = f"B-cos student ({model.name})"

    def prepare(self, images: torch.Tensor) -> Any:
        try:  # the explanation's own pass refuses a degenerate embedding
            return image_contributions(self.model, images, d_chunk=self.d_chunk, keep_weights=self.color)
        except DegenerateEmbeddingError:
            raise degenerate_answer(self.label) from None

    def explain(self, state: Any, text: torch.Tensor, prompts: Sequence[str]) -> Explanation:
        with torch.no_grad():
            return state.explain(text, prompts=list(prompts), return_weights=self.color)


@dataclass
class PerPromptState:
    """images (1, 3, H, W) in [0, 1]; embedding (1, D) unit or None; rows: prompt-embedding bytes ->
    that prompt's contributions (H, W), score, bias and weights (6, H, W) or None."""

    images: torch.Tensor
    embedding: Optional[torch.Tensor] = None
    rows: Dict[bytes, Dict[str, Optional[torch.Tensor]]] = field(default_factory=dict)


def explain_per_prompt(state: PerPromptState, text: torch.Tensor, prompts: Sequence[str],
                       compute: Callable[[torch.Tensor], Explanation]) -> Explanation:
    """Answer from state.rows, computing (one `compute` call, N = 1) only prompts new to the image."""
    keys = [t.detach().cpu().numpy().tobytes() for t in text]
    missing = [i for i, k in enumerate(keys) if k not in state.rows and keys.index(k) == i]
    if missing:
        e = compute(text[missing])
        for j, i in enumerate(missing):
            state.rows[keys[i]] = {"contributions": e.contributions[0, j].detach(), "score": e.scores[0, j],
                                   "bias": e.bias[0, j],
                                   "weights": None if e.weights is None else e.weights[0, j].detach()}
    rows = [state.rows[k] for k in keys]
    weights = [r["weights"] for r in rows]
    return Explanation(contributions=torch.stack([r["contributions"] for r in rows])[None],
                       scores=torch.stack([r["score"] for r in rows])[None],
                       bias=torch.stack([r["bias"] for r in rows])[None], images=state.images,
                       weights=None if any(w is None for w in weights) else torch.stack(weights)[None],
                       prompts=list(prompts))


class BcosPromptsMethod:
    """The B-cos student without the contribution tensor: each prompt new to an image costs one forward
    and its Jacobian row (`bcos_clip.explain`, method "prompts"); answers are cached per prompt.

    For large towers on a CPU, where the D rows of the tensor take far longer than the few prompts a
    user types (RN50, 224 px: D = 1024 rows)."""

    is_bcos = True

    def __init__(self, model: BcosCLIP, color: bool = True) -> None:
        self.model = model
        self.color = color
        self.name = "bcos"
        self.label = f"B-cos student ({model.name})"

    def prepare(self, images: torch.Tensor) -> PerPromptState:
        return PerPromptState(images=images.detach())

    def _compute(self, images: torch.Tensor, text: torch.Tensor) -> Explanation:
        try:
            return explain(self.model, images, text, return_weights=self.color, method="prompts")
        except DegenerateEmbeddingError:
            raise degenerate_answer(self.label) from None

    def explain(self, state: PerPromptState, text: torch.Tensor, prompts: Sequence[str]) -> Explanation:
        return explain_per_prompt(state, text, prompts, lambda t: self._compute(state.images, t))


class BaselineMethod:
    """A post-hoc attribution on the plain teacher: maps computed only for prompts new to the image."""

    is_bcos = False

    def __init__(self, model: torch.nn.Module, name: str, fn: Attribution) -> None:
        self.model = model
        self.name = name
        self.fn = fn
        self.label = f"{BASELINE_LABELS.get(name, name)} on the teacher ({getattr(model, 'name', 'CLIP')})"

    def prepare(self, images: torch.Tensor) -> PerPromptState:
        with torch.no_grad():
            raw = self.model.encode_image(images).float()
        check_embedding(raw, self.label)
        return PerPromptState(images=images.detach(), embedding=F.normalize(raw, dim=-1))

    def _compute(self, state: PerPromptState, text: torch.Tensor) -> Explanation:
        maps = self.fn(self.model, state.images, text).detach()  # (1, k, H, W)
        scores = state.embedding @ text.T
        return Explanation(contributions=maps, scores=scores, bias=torch.zeros_like(scores), images=state.images)

    def explain(self, state: PerPromptState, text: torch.Tensor, prompts: Sequence[str]) -> Explanation:
        return explain_per_prompt(state, text, prompts, lambda t: self._compute(state, t))


STRATEGIES = {"tensor": BcosMethod, "prompts": BcosPromptsMethod}


def bcos_method(model: BcosCLIP, strategy: str = "tensor", color: bool = True) -> Method:
    """The student's method for a per-image strategy: "tensor" (contribution tensor, then an einsum a
    prompt) or "prompts" (one Jacobian row per new prompt)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](model, color=color)


def baseline_methods(teacher: torch.nn.Module, names: Sequence[str] = ()) -> List[BaselineMethod]:
    """One BaselineMethod per name in `names` (default: every entry of BASELINES)."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    return [BaselineMethod(teacher, n, BASELINES[n]) for n in (names or BASELINES)]
