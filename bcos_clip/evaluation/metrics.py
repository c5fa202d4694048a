"""Benchmark metrics on embeddings / logits, in torch (CLIP_benchmark's definitions and names).

All functions take CPU or GPU tensors and return Python floats (or None when undefined); a metric
that cannot be computed is None, never NaN.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> List[Optional[float]]:
    """Fraction of samples whose target is among the top-k logits.

    logits: (N, C); targets: (N,) int64 class ids. Returns one value per k (None when k > C).
    """
    n, c = logits.shape
    if n == 0:
        return [None for _ in ks]
    top = logits.topk(min(max(ks), c), dim=1).indices  # (N, kmax)
    hit = top.eq(targets.view(-1, 1))
    return [float(hit[:, :k].any(dim=1).double().mean()) if k <= c else None for k in ks]


def mean_per_class_recall(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> Optional[float]:
    """Balanced accuracy: mean over classes present in ``targets`` of that class's recall.

    preds, targets: (N,) int64 class ids in [0, num_classes). The per-class recalls are averaged with
    numpy in class order, as scikit-learn's ``balanced_accuracy_score`` (CLIP_benchmark's metric)
    does, so the two agree to the last bit.
    """
    if targets.numel() == 0:
        return None
    correct = torch.zeros(num_classes, dtype=torch.float64, device=targets.device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=targets.device)
    total.index_add_(0, targets, torch.ones_like(targets, dtype=torch.float64))
    correct.index_add_(0, targets, preds.eq(targets).double())
    present = total > 0
    return float(np.mean((correct[present] / total[present]).cpu().numpy()))


def average_precision_per_class(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Non-interpolated average precision of each class, computed as CLIP_benchmark does.

    scores: (N, C) float; targets: (N, C), > 0 positive, == 0 negative, < 0 ignored ("difficult";
    CLIP_benchmark's own multilabel sets have none). Per class: rank by descending score, precision at
    each positive, summed and divided by max(#positives, 1) — a class without positives scores 0.
    Returns (C,) float32 (CLIP_benchmark's arithmetic, so its numbers come out exactly).
    """
    ap = torch.zeros(scores.shape[1], dtype=torch.float32)
    for j in range(scores.shape[1]):  # C is small (voc: 20); a sort per class keeps it exact
        keep = targets[:, j] >= 0
        s, truth = scores[keep, j].float(), (targets[keep, j] > 0).float()
        order = torch.sort(s, 0, True).indices
        hits = truth[order]
        precision = hits.cumsum(0) / torch.arange(1, hits.numel() + 1).float()
        ap[j] = precision[hits.bool()].sum() / max(float(hits.sum()), 1.0)
    return ap


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> Optional[float]:
    """Mean of :func:`average_precision_per_class` over *all* classes, as CLIP_benchmark: a class with
    no positive sample counts as 0 (dropping such classes instead gives a higher number). None for C = 0.

    scores: (N, C) logits; targets: (N, C) multi-hot.
    """
    if scores.shape[1] == 0:
        return None
    return float(average_precision_per_class(scores.cpu(), targets.cpu()).mean().item())


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, Optional[float]]:
    """``acc1``, ``acc5`` (None for fewer than 5 classes) and ``mean_per_class_recall``.

    logits: (N, C); targets: (N,) int64.
    """
    logits, targets = logits.float().cpu(), targets.long().cpu()
    ks = (1, 5) if logits.shape[1] >= 5 else (1,)  # top-5 only with 5+ classes, as CLIP_benchmark
    acc = topk_accuracy(logits, targets, ks) + [None]
    recall = mean_per_class_recall(logits.argmax(dim=1), targets, logits.shape[1])
    return {"acc1": acc[0], "acc5": acc[1], "mean_per_class_recall": recall}


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Optional[float]]:
    """Recall@k both ways, CLIP_benchmark names.

    image_emb: (Ni, D), text_emb: (Nt, D), both L2-normalised; text_to_image: (Nt,) index of each
    caption's image. ``image_retrieval_recall@k``: per caption, is its image among the k best images;
    ``text_retrieval_recall@k``: per image, is any of its captions among the k best captions.
    """
    scores = text_emb.float() @ image_emb.float().T  # (Nt, Ni), CLIP_benchmark's orientation
    nt, ni = scores.shape
    positive = torch.zeros(nt, ni, dtype=torch.bool, device=scores.device)
    positive[torch.arange(nt, device=scores.device), text_to_image.to(scores.device)] = True
    out: Dict[str, Optional[float]] = {}
    for k in ks:
        if ni == 0 or nt == 0:
            out[f"image_retrieval_recall@{k}"] = out[f"text_retrieval_recall@{k}"] = None
            continue
        img_hit = positive.gather(1, scores.topk(min(k, ni), dim=1).indices).any(dim=1)  # per caption
        txt_hit = positive.T.gather(1, scores.T.topk(min(k, nt), dim=1).indices).any(dim=1)  # per image
        # float32 means, as CLIP_benchmark computes them (its numbers then come out to the last bit)
        out[f"image_retrieval_recall@{k}"] = img_hit.float().mean().item()
        out[f"text_retrieval_recall@{k}"] = txt_hit.float().mean().item()
    return out
