"""Degenerate image embeddings refused in one place: a zero or non-finite embedding has no direction,
so its cosines, zero-shot predictions and explanations are undefined (NaN or silently chance).

Every path that turns image embeddings into numbers (explain, evaluation features, the pointing game's
confident-image selection, the trainer's zero-shot check, serve) calls :func:`check_image_embeddings`
(or an :class:`EmbeddingWatch` over a stream of batches), which raises :class:`DegenerateEmbeddingError`
with one line naming the model, what was found and for how many of how many images.

The usual cause: a B = 2 tower straight from ``bcosify`` whose eval-mode BatchNorm still holds the plain
tower's statistics shrinks every layer by its cosine factor, until the embedding underflows to 0;
``bcos_clip.recalibrate_batchnorm`` (``bcos-clip bcosify --calibrate-data``) refits them.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch

ZERO_HINT = ("a B-cos tower whose BatchNorm still holds the plain model's statistics does this: refit them with "
             "bcos_clip.recalibrate_batchnorm or `bcos-clip bcosify --calibrate-data`")
NONFINITE_HINT = "check the weights for NaN / inf, or run in fp32 if a low precision overflowed"


class DegenerateEmbeddingError(ValueError):
    """Zero or non-finite image embeddings (a ValueError: the CLI reports it in one line, exit 2)."""


def degenerate_message(model: str, zero: int, nonfinite: int, total: int, where: str = "") -> str:
    """The one line: the model, what was found for how many of how many images, where, and the cure."""
    found = [f"{what} for {n} of {total} images" for what, n in (("zero", zero), ("non-finite", nonfinite)) if n]
    place = f" ({where})" if where else ""
    hint = ZERO_HINT if zero else NONFINITE_HINT
    return f"model {model}: the image embedding is {' and '.join(found)}{place}, so its cosines are undefined; {hint}"


def model_name(model: Any) -> str:
    """How messages name a model: a string as given, the checkpoint folder it was loaded from, or its
    open_clip name (and pretrained tag)."""
    if isinstance(model, str):
        return model
    folder = getattr(model, "checkpoint_dir", None)
    if folder:
        return str(folder)
    name = getattr(model, "name", None)
    if name is None:
        return type(model).__name__
    pretrained = getattr(model, "pretrained", None)
    return f"{name} ({pretrained})" if pretrained else str(name)


def degenerate_rows(embeddings: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """embeddings (N, D) -> (zero, nonfinite), two (N,) bool masks.

    Judged on the norm every consumer divides by (fp32, float64 for a float64 tower): zero also
    catches embeddings whose norm underflows, non-finite also those whose norm overflows."""
    e = embeddings.detach()
    norm = torch.linalg.vector_norm(e if e.dtype == torch.float64 else e.float(), dim=-1)
    return norm == 0, ~torch.isfinite(norm)


class EmbeddingWatch:
    """Counts the images of a stream of embedding batches and raises at the first batch that holds a
    degenerate one (the message counts the images seen so far, that batch included)."""

    def __init__(self, model: Any, where: str = "") -> None:
        self.model, self.where = model, where
        self.total = 0

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """embeddings (N, D); returns them unchanged."""
        zero, nonfinite = degenerate_rows(embeddings)
        self.total += int(zero.numel())
        n_zero, n_bad = int(zero.sum()), int(nonfinite.sum())
        if n_zero or n_bad:
            raise DegenerateEmbeddingError(degenerate_message(model_name(self.model), n_zero, n_bad, self.total,
                                                              self.where))
        return embeddings


def check_image_embeddings(embeddings: torch.Tensor, model: Any, where: str = "") -> torch.Tensor:
    """Raise DegenerateEmbeddingError when any row of ``embeddings`` (N, D) is zero or non-finite;
    otherwise return them unchanged. ``model``: the model (or its name) for the message."""
    return EmbeddingWatch(model, where)(embeddings)
