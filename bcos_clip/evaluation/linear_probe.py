"""Linear probes on frozen L2-normalised features: the configuration shared by both protocols, the
record's metrics, saving a head, and the paper's protocol (METHOD.md §5).

The paper's protocol: a zero-initialised linear layer with bias, AdamW, lr 0.1, 20 epochs, batch 512,
cosine schedule without warm-up, weight decay 0 unless a validation split or proportion is given; then
a coarse-to-fine search over logspace(-6, 2) (97 points) and a refit on train + validation, also in
few-shot runs; few-shot: exactly k seeded samples per class. CLIP_benchmark's protocol (the default)
is :mod:`bcos_clip.evaluation.probe_clip_benchmark`; :mod:`bcos_clip.evaluation.probe` dispatches.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from bcos_clip.evaluation.metrics import classification_metrics, mean_per_class_recall, topk_accuracy
from bcos_clip.evaluation.results import sanitize

log = logging.getLogger(__name__)

WD_GRID = tuple(float(x) for x in torch.logspace(-6, 2, 97, dtype=torch.float64))  # 12 per decade
PROBE_PROTOCOLS = ("clip_benchmark", "paper")
# Defaults that differ between the protocols: epochs and the probe's batch size (None = the
# evaluation batch size, CLIP_benchmark's --batch_size).
PROTOCOL_DEFAULTS: Dict[str, Dict[str, Optional[int]]] = {
    "clip_benchmark": {"epochs": 10, "batch_size": None},
    "paper": {"epochs": 20, "batch_size": 512},
}


@dataclass(frozen=True)
class ProbeConfig:
    """Linear-probe settings. ``epochs`` / ``batch_size`` None: the protocol's default (see
    :data:`PROTOCOL_DEFAULTS`); ``fewshot_k`` <= 0 uses every training sample; ``precision`` is the
    autocast of the probe's own training and inference (CLIP_benchmark trains under its amp)."""

    lr: float = 0.1
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    weight_decay: float = 0.0
    fewshot_k: int = -1
    seed: int = 0
    val_proportion: Optional[float] = None
    val_split: Optional[str] = None
    device: str = "cpu"
    protocol: str = "clip_benchmark"
    precision: str = "fp32"

    def resolved(self, eval_batch_size: int) -> "ProbeConfig":
        """This config with ``epochs`` and ``batch_size`` filled in from the protocol's defaults."""
        if self.protocol not in PROTOCOL_DEFAULTS:
            raise ValueError(f"--probe-protocol {self.protocol!r}: choose one of {', '.join(PROBE_PROTOCOLS)}")
        defaults = PROTOCOL_DEFAULTS[self.protocol]
        epochs = self.epochs if self.epochs is not None else defaults["epochs"]
        batch = self.batch_size if self.batch_size is not None else (defaults["batch_size"] or eval_batch_size)
        return replace(self, epochs=int(epochs), batch_size=int(batch))


def paper_config(cfg: ProbeConfig) -> ProbeConfig:
    """``cfg`` for the paper's protocol: unset epochs / batch size become 20 / 512."""
    return replace(cfg, protocol="paper").resolved(512)


def probe_metrics(logits: torch.Tensor, targets: torch.Tensor, weight_decay: float, cfg: ProbeConfig,
                  with_acc5: bool) -> Dict[str, Any]:
    """The ``metrics`` of a linear-probe record, CLIP_benchmark's names: ``lp_acc1``, ``lp_acc5`` (None
    without ``with_acc5``), ``lp_mean_per_class_recall`` and the settings it puts beside them
    (``weight_decay``, ``epochs``, ``seed``, ``fewshot_k``, ``normalized``).

    logits: (N, C) test logits; targets: (N,) int64.
    """
    logits, targets = logits.float().cpu(), targets.long().cpu()
    acc = topk_accuracy(logits, targets, (1, 5) if with_acc5 else (1,)) + [None]
    recall = mean_per_class_recall(logits.argmax(dim=1), targets, max(logits.shape[1], int(targets.max()) + 1))
    return {"lp_acc1": acc[0], "lp_acc5": acc[1], "lp_mean_per_class_recall": recall,
            "weight_decay": weight_decay, "epochs": cfg.epochs, "seed": cfg.seed,
            "fewshot_k": cfg.fewshot_k, "normalized": True}


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
    cfg = paper_config(cfg)
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
    score = _val_acc(train, val, num_classes, paper_config(cfg))
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
                     ) -> Tuple[torch.nn.Linear, Dict[str, Any], dict]:
    """The paper's protocol: few-shot subsample, optional weight-decay search on ``val`` (or a
    proportion of train), refit on train + validation, score on ``test``. Unset epochs / batch size
    take the paper's 20 / 512. Returns (head, record metrics, settings actually used).

    train, test, val: (features (N, D), targets (N,) int64)."""
    cfg = paper_config(cfg)
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
    metrics = probe_metrics(probe_logits(probe, test[0]), test[1], wd, cfg, with_acc5=num_classes >= 5)
    used = {**asdict(cfg), "weight_decay": wd, "n_train": int(xtr.shape[0]), "wd_search": tried}
    return probe, metrics, used
