"""Zero-shot classification and retrieval of one model on one benchmark dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from bcos_clip.evaluation.classifier import cached_classifier, encode_texts
from bcos_clip.runtime.distributed import rank_world
from bcos_clip.evaluation.features import LoaderSettings, split_features
from bcos_clip.evaluation.metrics import classification_metrics, mean_average_precision, retrieval_metrics
from bcos_clip.models.text import CLIP_LOGIT_SCALE

LOGIT_SCALE = CLIP_LOGIT_SCALE


@dataclass
class TaskOutput:
    """Metrics of one (model, dataset, task) and what they were computed on."""

    metrics: Dict[str, Optional[float]]
    n_samples: int
    extra: Dict[str, Any] = field(default_factory=dict)


def zeroshot_logits(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logits = 100 * features @ W. features: (N, D) unit-norm; weights: (D, C). Returns (N, C)."""
    return LOGIT_SCALE * features.float() @ weights.float()


def _check_labels(targets: torch.Tensor, num_classes: int, dataset: Any) -> None:
    if targets.dim() == 1 and targets.numel() and int(targets.max()) >= num_classes:
        raise ValueError(f"dataset {dataset.name!r}: label {int(targets.max())} but only "
                         f"{num_classes} class names")
    if targets.dim() == 2 and targets.shape[1] != num_classes:
        raise ValueError(f"dataset {dataset.name!r}: multilabel targets have {targets.shape[1]} "
                         f"entries but {num_classes} class names")


def zeroshot_classification(model: Any, dataset: Any, settings: LoaderSettings,
                            cache_dir: Optional[Path] = None, split: str = "test",
                            text_digest: Optional[str] = None) -> Optional[TaskOutput]:
    """acc1 / acc5 / mean_per_class_recall (or mean_average_precision for multilabel) on rank 0;
    None on other ranks."""
    if dataset.kind == "retrieval" or not dataset.classnames:
        raise ValueError(f"dataset {dataset.name!r} has no class names: not a classification dataset")
    device = torch.device(settings.device)
    weights = cached_classifier(model, dataset.classnames, dataset.templates, device, cache_dir,
                                settings.precision, text_digest, write=rank_world()[0] == 0)
    out = split_features(model, dataset, split, settings)
    if out is None:
        return None
    feats, targets = out
    num_classes = len(dataset.classnames)
    _check_labels(targets, num_classes, dataset)
    logits = zeroshot_logits(feats, weights)
    if dataset.kind == "multilabel":
        metrics = {"mean_average_precision": mean_average_precision(logits, targets)}
    else:
        metrics = classification_metrics(logits, targets)
    return TaskOutput(metrics, int(feats.shape[0]), {"num_classes": num_classes,
                                                    "num_templates": len(dataset.templates)})


def zeroshot_retrieval(model: Any, dataset: Any, settings: LoaderSettings, split: str = "test",
                       recall_k: tuple = (1, 5, 10)) -> Optional[TaskOutput]:
    """image_retrieval_recall@k / text_retrieval_recall@k on rank 0; None on other ranks."""
    out = split_features(model, dataset, split, settings)
    if out is None:
        return None
    feats, captions = out
    if not isinstance(captions, list):
        raise ValueError(f"dataset {dataset.name!r} has no captions: not a retrieval dataset")
    texts = [c for caps in captions for c in caps]
    text_to_image = torch.tensor([i for i, caps in enumerate(captions) for _ in caps], dtype=torch.long)
    text_emb = encode_texts(model, texts, torch.device(settings.device),
                            max(settings.batch_size, 1), settings.precision)
    metrics = retrieval_metrics(feats, text_emb, text_to_image, recall_k)
    return TaskOutput(metrics, int(feats.shape[0]), {"num_texts": len(texts)})
