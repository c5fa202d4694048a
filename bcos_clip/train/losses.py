"""Distillation losses: pure functions on embeddings, dispatched through ``LOSSES[name]``.

Every loss takes the same arguments and returns a scalar (computed in float32):

- ``student``: (N, D) student image embeddings (any scale; normalised inside)
- ``teacher``: (N, D) teacher image embeddings of the same crops (normalised inside)
- ``text``: (K, D) frozen text embeddings (captions of the batch or class prompts), or None
- ``text_index``: (N,) int64 index of each image's own caption in ``text`` (-1: none), or None
- ``params``: :class:`LossParams`
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class LossParams:
    """Loss hyper-parameters (text_kd: temperature, caption_weight; siglip: scale, bias)."""

    temperature: float = 0.01
    caption_weight: float = 0.0
    siglip_scale: float = 10.0
    siglip_bias: float = -10.0


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)


def text_kd_loss(student: Tensor, teacher: Tensor, text: Optional[Tensor] = None,
                 text_index: Optional[Tensor] = None, params: LossParams = LossParams()) -> Tensor:
    """Cosine-similarity distillation against frozen text embeddings (the default).

    Rows ``s_i = cos(student_i, text) / T`` and ``t_i = cos(teacher_i, text) / T`` over the K texts;
    loss = mean_i KL(softmax(t_i) || softmax(s_i)) + caption_weight * mean_i (1 - cos(student_i,
    text[text_index_i])) over images that have a caption.
    """
    if text is None or text.shape[0] == 0:
        raise ValueError("text_kd needs text embeddings (captions or class prompts), got none")
    text_u = _unit(text.detach())
    s_logits = _unit(student) @ text_u.t() / params.temperature
    with torch.no_grad():
        t_logp = F.log_softmax(_unit(teacher) @ text_u.t() / params.temperature, dim=-1)
    loss = F.kl_div(F.log_softmax(s_logits, dim=-1), t_logp, log_target=True, reduction="batchmean")
    if params.caption_weight > 0 and text_index is not None:
        has = text_index >= 0
        if bool(has.any()):
            own = text_u[text_index[has]]
            cos = (_unit(student[has]) * own).sum(-1)
            loss = loss + params.caption_weight * (1.0 - cos).mean()
    return loss


def siglip_loss(student: Tensor, teacher: Tensor, text: Optional[Tensor] = None,
                text_index: Optional[Tensor] = None, params: LossParams = LossParams()) -> Tensor:
    """The paper's SigLIP-style loss between student and teacher image embeddings (METHOD.md §3).

    logits = scale * S T^T + bias (fixed 10, -10), labels +1 on the diagonal, -1 elsewhere;
    loss = -sum(log sigmoid(label * logit)) / N.
    """
    s, t = _unit(student), _unit(teacher.detach())
    logits = params.siglip_scale * s @ t.t() + params.siglip_bias
    labels = 2.0 * torch.eye(s.shape[0], device=s.device, dtype=logits.dtype) - 1.0
    return -F.logsigmoid(labels * logits).sum() / s.shape[0]


def cosine_loss(student: Tensor, teacher: Tensor, text: Optional[Tensor] = None,
                text_index: Optional[Tensor] = None, params: LossParams = LossParams()) -> Tensor:
    """mean_i (1 - cos(student_i, teacher_i))."""
    return (1.0 - (_unit(student) * _unit(teacher.detach())).sum(-1)).mean()


LossFn = Callable[..., Tensor]
LOSSES: Dict[str, LossFn] = {
    "text_kd": text_kd_loss,
    "siglip": siglip_loss,
    "cosine": cosine_loss,
}
# Losses that need text embeddings (the trainer builds them only for these).
TEXT_LOSSES = frozenset({"text_kd"})
