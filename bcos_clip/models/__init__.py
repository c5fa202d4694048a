"""Teachers, the public bcosify(), BcosCLIP, PlainCLIP and checkpoints.

With bcosify/, the only place that imports open_clip / transformers model code.
"""
from bcos_clip.models.bcos_model import BcosCLIP, bcosify, check_images, text_tower_of
from bcos_clip.models.checkpoint import (CheckpointMismatchError, is_checkpoint_dir, key_diff, load,
                                         read_config, save)
from bcos_clip.models.embedding_check import DegenerateEmbeddingError, EmbeddingWatch, check_image_embeddings
from bcos_clip.models.loading import deep_merge, load_clip, make_tokenizer, model_source
from bcos_clip.models.plain import ImageTextModel, PlainCLIP, resolve_model
from bcos_clip.models.recalibrate import RecalibrationReport, recalibrate_batchnorm
from bcos_clip.models.text import DEFAULT_TEMPLATES, encode_prompts, format_template

__all__ = [
    "BcosCLIP", "CheckpointMismatchError", "DEFAULT_TEMPLATES", "DegenerateEmbeddingError", "EmbeddingWatch",
    "ImageTextModel", "PlainCLIP", "RecalibrationReport", "bcosify", "check_image_embeddings", "check_images", "deep_merge",
    "encode_prompts", "format_template", "is_checkpoint_dir", "key_diff",
    "load", "load_clip", "make_tokenizer", "model_source", "read_config", "recalibrate_batchnorm", "resolve_model",
    "save",
    "text_tower_of",
]
