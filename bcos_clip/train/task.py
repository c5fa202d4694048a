"""The distillation task: a frozen teacher CLIP and its B-cosified student see the same crops.

The teacher gets the crop normalised with its CLIP mean/std (``PlainCLIP`` does that), the student the
same ``[0, 1]`` crop as ``[x, 1 - x]`` (the normalisation is folded into its first layer). The loss is
``LOSSES[name]`` on the two image embeddings (and, for ``text_kd``, the frozen text embeddings).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from bcos_clip import nn as bnn
from bcos_clip.models import BcosCLIP, PlainCLIP, bcosify, is_checkpoint_dir, load, load_clip, read_config
from bcos_clip.models.checkpoint import TEACHER_VISUAL_NAME, WEIGHTS_NAME, load_teacher_visual, \
    load_weights_strict, read_model_weights
from bcos_clip.runtime.precision import Precision, teacher_dtype
from bcos_clip.train.config import TrainConfig
from bcos_clip.train.losses import LOSSES, TEXT_LOSSES
from bcos_clip.train.text_targets import TextTargets

log = logging.getLogger(__name__)
Tensor = torch.Tensor


def _teacher_from_checkpoint(directory: str, pretrained: Optional[str]) -> PlainCLIP:
    """The teacher a bcos_clip checkpoint records (its own saved tower when present)."""
    config = read_config(directory)
    src = config["source"]
    clip, _, tokenizer = load_clip(src["name"], pretrained or src.get("pretrained"), **(src.get("overrides") or {}))
    if (Path(directory) / TEACHER_VISUAL_NAME).is_file():
        load_teacher_visual(directory, clip)
    return PlainCLIP.from_clip(clip, tokenizer)


def build_models(cfg: TrainConfig, resume_dir: Optional[Path]) -> Tuple[PlainCLIP, BcosCLIP]:
    """Frozen teacher and student: ``bcosify(teacher, b, bias)``, or a saved BcosCLIP (``--model DIR``),
    with the weights of ``resume_dir`` when resuming."""
    if is_checkpoint_dir(cfg.model):
        teacher = _teacher_from_checkpoint(cfg.model, cfg.pretrained)
        student = load(cfg.model)
    else:
        clip, _, tokenizer = load_clip(cfg.model, cfg.pretrained)
        teacher = PlainCLIP.from_clip(clip, tokenizer)
        student = bcosify(clip, b=cfg.bcos_b, bias=cfg.bcos_bias, qk=cfg.bcos_qk, layernorm=cfg.bcos_layernorm,
                          positional=cfg.bcos_positional, positional_scale=cfg.bcos_positional_scale)
    if resume_dir is not None:
        load_weights_strict(student, read_model_weights(resume_dir / WEIGHTS_NAME), str(resume_dir / WEIGHTS_NAME))
    teacher.eval().requires_grad_(False)
    student.text.requires_grad_(False)
    return teacher, student


def prepare_devices(teacher: PlainCLIP, student: BcosCLIP, device: torch.device, precision: Precision,
                    channels_last: bool) -> None:
    """Move both models; teacher in bf16 on GPU; student weights in the precision's dtype."""
    teacher.to(device)
    teacher.clip.to(teacher_dtype(device))
    student.to(device)
    student.visual.to(precision.weight_dtype)
    if channels_last:
        student.visual.to(memory_format=torch.channels_last)
        teacher.clip.visual.to(memory_format=torch.channels_last)


class DistillTask(nn.Module):
    """Computes the loss of one batch.

    Args:
        teacher: frozen PlainCLIP.
        student: BcosCLIP; ``visual`` is the trained tower.
        visual: what runs the student tower (``student.visual``, its DDP wrapper or a compiled one).
        loss_name: a key of ``LOSSES``.
        text_targets: frozen text embeddings for ``text_kd`` (None for the image-only losses).
    """

    def __init__(self, teacher: PlainCLIP, student: BcosCLIP, visual: nn.Module, loss_name: str,
                 loss_params, precision: Precision, text_targets: Optional[TextTargets],
                 channels_last: bool = False) -> None:
        super().__init__()
        if loss_name in TEXT_LOSSES and text_targets is None:
            raise ValueError(f"--loss {loss_name} needs text targets")
        self.teacher, self.student, self.visual = teacher, student, visual
        self.loss_fn, self.loss_params = LOSSES[loss_name], loss_params
        self.needs_text = loss_name in TEXT_LOSSES
        self.precision, self.text_targets, self.channels_last = precision, text_targets, channels_last

    @torch.no_grad()
    def teacher_embed(self, images: Tensor) -> Tensor:
        """images: (N, 3, H, W) in [0, 1] -> (N, D) float32 teacher embeddings."""
        dtype = next(self.teacher.clip.parameters()).dtype
        x = images.to(dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.teacher.encode_image(x).float()

    def student_embed(self, images: Tensor) -> Tensor:
        """images: (N, 3, H, W) in [0, 1] -> (N, D) student embeddings (autocast per precision)."""
        x6 = self.student.input_norm(bnn.add_inverse(images.to(self.precision.weight_dtype)))
        if self.channels_last:
            x6 = x6.contiguous(memory_format=torch.channels_last)
        with self.precision.autocast():
            return self.visual(x6)

    def text_for(self, captions: Sequence[Optional[str]],
                 labels: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``text_kd``'s (K, D) text embeddings and (N,) own indices; (None, None) for other losses.

        The embeddings are None when the batch has no caption (captions mode).
        """
        if not self.needs_text:
            return None, None
        with self.precision.autocast():
            return self.text_targets.for_batch(captions, labels)

    def loss(self, images: Tensor, text: Optional[Tensor], own: Optional[Tensor]) -> Tensor:
        """Scalar float32 loss; images: (N, 3, H, W) in [0, 1] on the device, N >= 1."""
        teacher = self.teacher_embed(images)
        student = self.student_embed(images)
        return self.loss_fn(student.float(), teacher, text, own, self.loss_params)

    def batch_loss(self, images: Tensor, captions: Sequence[Optional[str]],
                   labels: Tensor) -> Optional[Tensor]:
        """:meth:`text_for` + :meth:`loss`; None when ``text_kd`` finds no text for the batch."""
        text, own = self.text_for(captions, labels)
        if self.needs_text and text is None:
            return None
        return self.loss(images, text, own)
