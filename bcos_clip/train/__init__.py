"""Distillation of a B-cosified CLIP image tower against its frozen teacher (METHOD.md §3).

``train(TrainConfig(...))`` runs on one process or on every torchrun rank; ``LOSSES`` holds the losses.
"""
from bcos_clip.train.config import TrainConfig, build_config
from bcos_clip.train.losses import LOSSES, LossParams
from bcos_clip.train.loop import train

__all__ = ["LOSSES", "LossParams", "TrainConfig", "build_config", "train"]
