"""Zero-shot classification and retrieval of one model on one benchmark dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from bcos_clip.evaluation.classifier import cached_classifier, encode_texts, load_classifiers, save_classifier
from bcos_clip.runtime.distributed import rank_world
from bcos_clip.evaluation.features import LoaderSettings, split_features
from bcos_clip.evaluation.metrics import classification_metrics, mean_average_precision, retrieval_metrics
from bcos_clip.runtime.precision import autocast
from bcos_clip.models.text import CLIP_LOGIT_SCALE

LOGIT_SCALE = CLIP_LOGIT_SCALE


@dataclass
class TaskOutput:
    """Metrics of one (model, dataset, task) and what they were computed on."""

    metrics: Dict[str, Optional[float]]
    n_samples: int
    extra: Dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def zeroshot_logits(features: torch.Tensor, weights: torch.Tensor, precision: str = "fp32",
                    device: Any = "cpu", batch_size: int = 0) -> torch.Tensor:
    """logits = 100 * features @ W, computed as CLIP_benchmark does: one batch of ``batch_size`` images
    at a time (0: all at once), on ``device`` under the evaluation's autocast (fp16 logits under CUDA
    amp, as theirs). features: (N, D) unit-norm; weights: (D, C). Returns (N, C) float32 on CPU."""
    device = torch.device(device)
    w = weights.float().to(device)
    step = batch_size if batch_size > 0 else max(features.shape[0], 1)
    out = []
    for i in range(0, features.shape[0], step):
        with autocast(precision, device):
            out.append((LOGIT_SCALE * features[i:i + step].float().to(device) @ w).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, weights.shape[1])


def _check_labels(targets: torch.Tensor, num_classes: int, dataset: Any) -> None:
    if targets.dim() == 1 and targets.numel() and int(targets.max()) >= num_classes:
        raise ValueError(f"dataset {dataset.name!r}: label {int(targets.max())} but only "
                         f"{num_classes} class names")
    if targets.dim() == 2 and targets.shape[1] != num_classes:
        raise ValueError(f"dataset {dataset.name!r}: multilabel targets have {targets.shape[1]} "
                         f"entries but {num_classes} class names")


@dataclass(frozen=True)
class ClassifierFiles:
    """CLIP_benchmark's ``--save_clf`` (where to save this run's classifier) and ``--load_clfs``
    (classifiers to average instead of building one from the text tower)."""

    save: Optional[Path] = None
    load: Sequence[str] = ()


def _classifier(model: Any, dataset: Any, settings: LoaderSettings, cache_dir: Optional[Path],
                text_digest: Optional[str], files: ClassifierFiles) -> torch.Tensor:
    device = torch.device(settings.device)
    if files.load:
        weights = load_classifiers(files.load, int(model.embed_dim), len(dataset.classnames))
    else:
        weights = cached_classifier(model, dataset.classnames, dataset.templates, device, cache_dir,
                                    settings.precision, text_digest, write=rank_world()[0] == 0)
    if files.save is not None and rank_world()[0] == 0:
        save_classifier(weights, files.save)
    return weights


def zeroshot_classification(model: Any, dataset: Any, settings: LoaderSettings,
                            cache_dir: Optional[Path] = None, split: str = "test",
                            text_digest: Optional[str] = None,
                            files: ClassifierFiles = ClassifierFiles()) -> Optional[TaskOutput]:
    """acc1 / acc5 / mean_per_class_recall (or mean_average_precision for multilabel) on rank 0;
    None on other ranks."""
    if dataset.kind == "retrieval" or not dataset.classnames:
        raise ValueError(f"dataset {dataset.name!r} has no class names: not a classification dataset")
    weights = _classifier(model, dataset, settings, cache_dir, text_digest, files)
    out = split_features(model, dataset, split, settings)
    if out is None:
        return None
    feats, targets = out
    num_classes = len(dataset.classnames)
    _check_labels(targets, num_classes, dataset)
    logits = zeroshot_logits(feats, weights, settings.precision, settings.device, settings.batch_size)
    if dataset.kind == "multilabel":
        metrics = {"mean_average_precision": mean_average_precision(logits, targets)}
    else:
        metrics = classification_metrics(logits, targets)
    return TaskOutput(metrics, int(feats.shape[0]), {"num_classes": num_classes,
                                                    "num_templates": len(dataset.templates)})


def zeroshot_retrieval(model: Any, dataset: Any, settings: LoaderSettings, split: str = "test",
                       recall_k: tuple = (1, 5, 10)) -> Optional[TaskOutput]:
    """image_retrieval_recall@k / text_retrieval_recall@k on rank 0; None on other ranks. The captions
    are encoded in the groups CLIP_benchmark uses: those of one batch of images at a time."""
    out = split_features(model, dataset, split, settings)
    if out is None:
        return None
    feats, captions = out
    if not isinstance(captions, list):
        raise ValueError(f"dataset {dataset.name!r} has no captions: not a retrieval dataset")
    step = max(settings.batch_size, 1)
    groups = [[c for caps in captions[i:i + step] for c in caps] for i in range(0, len(captions), step)]
    device = torch.device(settings.device)
    parts = [encode_texts(model, g, device, len(g), settings.precision) for g in groups if g]
    if not parts:
        raise ValueError(f"dataset {dataset.name!r} split {split!r}: no captions")
    text_to_image = torch.tensor([i for i, caps in enumerate(captions) for _ in caps], dtype=torch.long)
    metrics = retrieval_metrics(feats, torch.cat(parts), text_to_image, recall_k)
    return TaskOutput(metrics, int(feats.shape[0]), {"num_texts": int(text_to_image.numel())})
