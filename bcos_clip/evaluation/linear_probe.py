"""Linear probe on frozen L2-normalised features: torch logistic regression (paper settings:
AdamW, lr 0.1, 20 epochs, batch 512, cosine schedule without warm-up, weight decay 0), an optional
weight-decay search over logspace(-6, 2) on a validation split or proportion (then refit on
train + validation), and optional few-shot sampling (k per class, seeded)."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from bcos_clip.evaluation.metrics import classification_metrics
from bcos_clip.evaluation.results import sanitize

log = logging.getLogger(__name__)

WD_GRID = tuple(float(x) for x in torch.logspace(-6, 2, 97, dtype=torch.float64))  # 12 per decade


@dataclass(frozen=True)
class ProbeConfig:
    """Logistic-regression hyper-parameters; ``fewshot_k`` <= 0 uses every training sample."""

    lr: float = 0.1
    epochs: int = 20
    batch_size: int = 512
    weight_decay: float = 0.0
    fewshot_k: int = -1
    seed: int = 0
    val_proportion: Optional[float] = None
    val_split: Optional[str] = None
    device: str = "cpu"


def fewshot_indices(targets: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Exactly ``k`` indices per class present in ``targets`` (N,), drawn with ``seed``; sorted."""
    gen = torch.Generator().manual_seed(seed)
    picked: List[torch.Tensor] = []
    for c in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == c).view(-1)
        if idx.numel() < k:
            raise ValueError(f"few-shot k={k}: class {c} has only {idx.numel()} training samples")
        picked.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    return torch.cat(picked).sort().values


def split_validation(n: int, proportion: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) index split of ``n`` samples; validation gets ``proportion``."""
    if not 0.0 < proportion < 1.0:
        raise ValueError(f"--val_proportion {proportion}: must be in (0, 1)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    n_val = max(1, int(round(n * proportion)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def train_probe(features: torch.Tensor, targets: torch.Tensor, num_classes: int,
                cfg: ProbeConfig, weight_decay: float) -> torch.nn.Linear:
    """Fit a linear layer (with bias) by cross-entropy. features: (N, D); targets: (N,) int64.

    Zero-initialised, seeded shuffling: the same inputs give the same head. Returns it on CPU.
    """
    device = torch.device(cfg.device)
    x, y = features.float().to(device), targets.long().to(device)
    probe = torch.nn.Linear(x.shape[1], num_classes).to(device)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(x.shape[0] / cfg.batch_size)
    total, step = cfg.epochs * steps_per_epoch, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(device)
        for i in range(0, x.shape[0], cfg.batch_size):
            for group in opt.param_groups:  # cosine decay per step, no warm-up
                group["lr"] = 0.5 * (1.0 + math.cos(math.pi * step / total)) * cfg.lr
            batch = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(probe(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return probe.cpu().eval()


@torch.no_grad()
def probe_logits(probe: torch.nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, C) logits on CPU."""
    return probe(features.float().cpu())


def _val_acc(train: Tuple[torch.Tensor, torch.Tensor], val: Tuple[torch.Tensor, torch.Tensor],
             num_classes: int, cfg: ProbeConfig) -> Callable[[int], float]:
    cache: Dict[int, float] = {}

    def score(i: int) -> float:
        if i not in cache:
            probe = train_probe(train[0], train[1], num_classes, cfg, WD_GRID[i])
            cache[i] = classification_metrics(probe_logits(probe, val[0]), val[1])["acc1"] or 0.0
            log.info("probe wd=%.2e: validation acc1 %.4f", WD_GRID[i], cache[i])
        return cache[i]

    score.cache = cache  # type: ignore[attr-defined]
    return score


def search_weight_decay(train: Tuple[torch.Tensor, torch.Tensor], val: Tuple[torch.Tensor, torch.Tensor],
                        num_classes: int, cfg: ProbeConfig) -> Tuple[float, Dict[str, float]]:
    """Coarse-to-fine search over WD_GRID (one point a decade, then +-6, +-3, +-1 grid steps
    around the best); ties go to the smaller weight decay. Returns (best wd, {wd: val acc1})."""
    score = _val_acc(train, val, num_classes, cfg)
    best = max(range(0, len(WD_GRID), 12), key=lambda i: (score(i), -i))
    for step in (6, 3, 1):
        cands = [j for j in (best - step, best, best + step) if 0 <= j < len(WD_GRID)]
        best = max(cands, key=lambda i: (score(i), -i))
    tried = {f"{WD_GRID[i]:.3e}": acc for i, acc in sorted(score.cache.items())}  # type: ignore[attr-defined]
    return WD_GRID[best], tried


def save_probe(probe: torch.nn.Linear, path: Path, classnames: Sequence[str], info: dict) -> Path:
    """Write the head as safetensors (``weight`` (C, D), ``bias`` (C,)) with JSON metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"classnames": json.dumps(list(classnames)),
            "info": json.dumps(sanitize(info), default=str, allow_nan=False)}  # NaN -> null, strict JSON
    save_file({"weight": probe.weight.detach().contiguous(), "bias": probe.bias.detach().contiguous()},
              str(path), metadata=meta)
    return path


def fit_and_evaluate(train: Tuple[torch.Tensor, torch.Tensor], test: Tuple[torch.Tensor, torch.Tensor],
                     num_classes: int, cfg: ProbeConfig,
                     val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                     ) -> Tuple[torch.nn.Linear, Dict[str, Optional[float]], dict]:
    """Few-shot subsample, optional weight-decay search on ``val`` (or a proportion of train),
    fit, and score on ``test``. Returns (head, metrics, probe settings actually used)."""
    xtr, ytr = train
    if cfg.fewshot_k > 0:
        keep = fewshot_indices(ytr, cfg.fewshot_k, cfg.seed)
        xtr, ytr = xtr[keep], ytr[keep]
    if val is None and cfg.val_proportion:
        tr_idx, va_idx = split_validation(xtr.shape[0], cfg.val_proportion, cfg.seed)
        val, (xtr, ytr) = (xtr[va_idx], ytr[va_idx]), (xtr[tr_idx], ytr[tr_idx])
    wd, tried = cfg.weight_decay, {}
    if val is not None:
        wd, tried = search_weight_decay((xtr, ytr), val, num_classes, cfg)
        xtr, ytr = torch.cat([xtr, val[0]]), torch.cat([ytr, val[1]])  # refit on train + val
    probe = train_probe(xtr, ytr, num_classes, cfg, wd)
    metrics = classification_metrics(probe_logits(probe, test[0]), test[1])
    used = {**asdict(cfg), "weight_decay": wd, "n_train": int(xtr.shape[0]), "wd_search": tried}
    return probe, metrics, used
