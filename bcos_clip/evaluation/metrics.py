"""Benchmark metrics on embeddings / logits, in torch (CLIP_benchmark's definitions and names).

All functions take CPU or GPU tensors and return Python floats (or None when undefined); a metric
that cannot be computed is None, never NaN.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

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

    preds, targets: (N,) int64 class ids in [0, num_classes).
    """
    if targets.numel() == 0:
        return None
    correct = torch.zeros(num_classes, dtype=torch.float64, device=targets.device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=targets.device)
    total.index_add_(0, targets, torch.ones_like(targets, dtype=torch.float64))
    correct.index_add_(0, targets, preds.eq(targets).double())
    present = total > 0
    return float((correct[present] / total[present]).mean())


def average_precision_per_class(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Non-interpolated average precision of each class.

    scores: (N, C) float; targets: (N, C), > 0 positive, == 0 negative, < 0 ignored ("difficult").
    Returns (C,) float64, NaN for classes without positives (callers drop them).
    """
    scores, targets = scores.double(), targets.double()
    ap = torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    for j in range(scores.shape[1]):  # C is small (voc: 20); a sort per class keeps it exact
        keep = targets[:, j] >= 0
        s, t = scores[keep, j], (targets[keep, j] > 0).double()
        if t.sum() == 0:
            continue
        order = torch.argsort(s, descending=True, stable=True)
        hits = t[order]
        precision = hits.cumsum(0) / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
        ap[j] = (precision * hits).sum() / hits.sum()
    return ap


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> Optional[float]:
    """Mean of :func:`average_precision_per_class` over classes with at least one positive."""
    ap = average_precision_per_class(scores.cpu(), targets.cpu())
    ap = ap[~torch.isnan(ap)]
    return float(ap.mean()) if ap.numel() else None


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, Optional[float]]:
    """``acc1``, ``acc5`` (None for fewer than 5 classes) and ``mean_per_class_recall``.

    logits: (N, C); targets: (N,) int64.
    """
    logits, targets = logits.float().cpu(), targets.long().cpu()
    acc1, acc5 = topk_accuracy(logits, targets, (1, 5))
    recall = mean_per_class_recall(logits.argmax(dim=1), targets, logits.shape[1])
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": recall}


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Optional[float]]:
    """Recall@k both ways, CLIP_benchmark names.

    image_emb: (Ni, D), text_emb: (Nt, D), both L2-normalised; text_to_image: (Nt,) index of each
    caption's image. ``image_retrieval_recall@k``: per caption, is its image among the k best images;
    ``text_retrieval_recall@k``: per image, is any of its captions among the k best captions.
    """
    scores = image_emb.float() @ text_emb.float().T  # (Ni, Nt)
    ni, nt = scores.shape
    positive = torch.zeros(ni, nt, dtype=torch.bool, device=scores.device)
    positive[text_to_image.to(scores.device), torch.arange(nt, device=scores.device)] = True
    out: Dict[str, Optional[float]] = {}
    for k in ks:
        if ni == 0 or nt == 0:
            out[f"image_retrieval_recall@{k}"] = out[f"text_retrieval_recall@{k}"] = None
            continue
        top_img = scores.T.topk(min(k, ni), dim=1).indices  # (Nt, k) images per caption
        img_hit = positive.T.gather(1, top_img).any(dim=1)
        top_txt = scores.topk(min(k, nt), dim=1).indices  # (Ni, k) captions per image
        txt_hit = positive.gather(1, top_txt).any(dim=1)
        out[f"image_retrieval_recall@{k}"] = float(img_hit.double().mean())
        out[f"text_retrieval_recall@{k}"] = float(txt_hit.double().mean())
    return out
