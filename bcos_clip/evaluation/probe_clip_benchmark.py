"""CLIP_benchmark's linear-probe protocol (clip_benchmark 1.6.2), re-implemented so that it runs on any
device (theirs asserts CUDA) and its numbers can sit in one table with theirs.

What it does, step by step (features: frozen, L2-normalised):

- classes: the largest training label + 1 (of the training part, after any validation split);
- validation: a given ``val_split``, or ``val_proportion`` of the training set split off first
  (``torch.utils.data.random_split``'s sizes: floor of each share, the remainder to the first part);
- few-shot: one random permutation of the training set, the first k samples of each class in that
  order (k = -1: all samples, permuted); a class with fewer than k samples is an error;
- training: PyTorch's default ``nn.Linear`` initialisation and data order drawn from ``seed`` exactly
  as ``torch.manual_seed(seed)`` then a shuffling DataLoader would draw them, AdamW (lr 0.1), cross
  entropy, cosine schedule per step without warm-up, 10 epochs, batches of the evaluation batch size;
- weight decay: 0 without validation data; with it, a search over ``numpy.logspace(-6, 2, 97)``: the
  7 points that are also in ``logspace(-6, 2, 7)``, then three candidates (peak - s, peak, peak + s) for
  s = 8, 4, 2, 1; a candidate replaces the peak only if its validation top-1 is strictly higher, and
  the search starts from index 0 with accuracy 0 (so ties keep the earlier candidate);
- refit: on train + validation for full-data probes, on the few-shot samples alone for few-shot ones;
- metrics: ``lp_acc1``, ``lp_acc5`` (only when the largest test label is >= 5, as theirs),
  ``lp_mean_per_class_recall`` (balanced accuracy).

The permutation (and a ``val_proportion`` split) is drawn, as theirs, from the global RNG where
their model loading and feature extraction left it: ``rng`` replays that (:mod:`probe_rng`); without
it, straight from ``seed``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from bcos_clip.evaluation.linear_probe import ProbeConfig, probe_metrics
from bcos_clip.evaluation.metrics import topk_accuracy
from bcos_clip.evaluation.probe_rng import ClipBenchmarkRng
from bcos_clip.runtime.precision import autocast

log = logging.getLogger(__name__)

Split = Tuple[torch.Tensor, torch.Tensor]  # features (N, D), targets (N,) int64

WD_LIST: List[float] = np.logspace(-6, 2, num=97).tolist()
_COARSE = set(np.logspace(-6, 2, num=7).tolist())
WD_COARSE: List[int] = [i for i, v in enumerate(WD_LIST) if v in _COARSE]  # exact float matches only


def random_split_indices(n: int, proportion: float, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of ``n`` samples as ``random_split(ds, [1 - p, p])`` picks them."""
    if not 0.0 < proportion < 1.0:
        raise ValueError(f"--val_proportion {proportion}: must be in (0, 1)")
    sizes = [math.floor(n * (1.0 - proportion)), math.floor(n * proportion)]
    for i in range(n - sum(sizes)):
        sizes[i % 2] += 1
    perm = torch.randperm(n, generator=gen)
    return perm[:sizes[0]], perm[sizes[0]:]


def fewshot_order(targets: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Indices into ``targets`` (N,): a random permutation, keeping the first ``k`` of each class
    (k <= 0: every sample). Raises when a class has fewer than ``k`` samples."""
    perm = torch.randperm(targets.numel(), generator=gen)
    if k <= 0:
        return perm
    labels = targets[perm].tolist()
    counts: Dict[int, int] = {}
    keep = []
    for pos, c in enumerate(labels):
        if counts.get(c, 0) < k:
            counts[c] = counts.get(c, 0) + 1
            keep.append(pos)
    short = {c: n for c, n in counts.items() if n != k}
    if short:
        c, n = next(iter(sorted(short.items())))
        raise ValueError(f"few-shot k={k}: class {c} has only {n} training samples")
    return perm[torch.tensor(keep, dtype=torch.long)]


def init_linear(in_dim: int, out_dim: int, gen: torch.Generator) -> torch.nn.Linear:
    """``nn.Linear(in_dim, out_dim)`` initialised as PyTorch does, drawing from ``gen``."""
    layer = torch.nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=gen)
        bound = 1.0 / math.sqrt(in_dim) if in_dim > 0 else 0.0
        layer.bias.uniform_(-bound, bound, generator=gen)
    return layer


def epoch_order(n: int, gen: torch.Generator) -> torch.Tensor:
    """The order in which a ``DataLoader(shuffle=True)`` visits ``n`` samples when its epoch starts
    with ``gen`` as the global RNG: one draw for the workers' base seed, one for the sampler's seed."""
    torch.empty((), dtype=torch.int64).random_(generator=gen)
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=gen).item())
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def train_head(x: torch.Tensor, y: torch.Tensor, out_dim: int, weight_decay: float,
               cfg: ProbeConfig) -> torch.nn.Linear:
    """One probe fit: x (N, D) float, y (N,) int64 -> a linear head (on CPU, eval mode)."""
    device = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    head = init_linear(x.shape[1], out_dim, gen).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=weight_decay)
    x, y = x.float().to(device), y.long().to(device)
    steps = math.ceil(x.shape[0] / cfg.batch_size)
    total = cfg.epochs * steps
    for epoch in range(cfg.epochs):
        order = epoch_order(x.shape[0], gen).to(device)
        for i in range(steps):
            lr = 0.5 * (1 + np.cos(np.pi * (i + epoch * steps) / total)) * cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            batch = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            opt.zero_grad()
            with autocast(cfg.precision, device):
                loss = F.cross_entropy(head(x[batch]), y[batch])
            loss.backward()
            opt.step()
    return head.cpu().eval()


@torch.no_grad()
def head_logits(head: torch.nn.Linear, x: torch.Tensor, cfg: ProbeConfig) -> torch.Tensor:
    """(N, D) -> (N, C) float32 logits on CPU, under the probe's autocast."""
    device = torch.device(cfg.device)
    head = head.to(device)
    with autocast(cfg.precision, device):
        out = head(x.float().to(device))
    head.cpu()
    return out.float().cpu()


def search_weight_decay(train: Split, val: Split, out_dim: int, cfg: ProbeConfig) -> Tuple[float, Dict[str, float]]:
    """Their search (module docstring). Returns (best weight decay, {weight decay: validation top-1})."""
    cache: Dict[int, float] = {}

    def acc1(i: int) -> float:
        if i not in cache:  # training is deterministic: a repeated candidate scores the same
            head = train_head(train[0], train[1], out_dim, WD_LIST[i], cfg)
            cache[i] = topk_accuracy(head_logits(head, val[0], cfg), val[1], (1,))[0] or 0.0
            log.info("probe wd=%.3e: validation acc1 %.4f", WD_LIST[i], cache[i])
        return cache[i]

    def peak(candidates: List[int]) -> int:
        best, best_acc = 0, 0.0
        for i in candidates:
            if best_acc < acc1(i):
                best, best_acc = i, acc1(i)
        return best

    best, span = peak(WD_COARSE), 8
    while span > 0:
        best = peak([max(best - span, 0), best, min(best + span, len(WD_LIST) - 1)])
        span //= 2
    return WD_LIST[best], {f"{WD_LIST[i]:.3e}": a for i, a in sorted(cache.items())}


def _split_off_validation(train: Split, cfg: ProbeConfig, gen: torch.Generator) -> Tuple[Split, Optional[Split]]:
    if not cfg.val_proportion:
        return train, None
    tr, va = random_split_indices(train[1].numel(), cfg.val_proportion, gen)
    return (train[0][tr], train[1][tr]), (train[0][va], train[1][va])


def fit_and_evaluate(train: Split, test: Split, num_classes: int, cfg: ProbeConfig,
                     val: Optional[Split] = None, rng: Optional[ClipBenchmarkRng] = None
                     ) -> Tuple[torch.nn.Linear, Dict[str, Any], Dict[str, Any]]:
    """CLIP_benchmark's protocol (module docstring). ``num_classes`` (the dataset's) is not used: as
    theirs, the head has (largest training label + 1) outputs. ``cfg`` must be resolved
    (:meth:`ProbeConfig.resolved`). ``rng``: their global RNG before the permutation (None: from
    ``cfg.seed``). Returns (head, record metrics, settings actually used)."""
    if cfg.epochs is None or cfg.batch_size is None:
        raise ValueError("ProbeConfig.resolved(batch_size) first: epochs / batch_size unset")
    rng = rng if rng is not None else ClipBenchmarkRng(cfg.seed)
    gen = rng.generator()
    if val is None:
        train, val = _split_off_validation(train, cfg, gen)
    rng.skip_loaders(gen)
    if train[1].numel() == 0:
        raise ValueError("the linear probe has no training samples")
    out_dim = int(train[1].max()) + 1
    if val is not None and val[1].numel() and int(val[1].max()) >= out_dim:
        raise ValueError(f"validation label {int(val[1].max())} never occurs in the training data")
    keep = fewshot_order(train[1], cfg.fewshot_k, gen)
    xtr, ytr = train[0][keep], train[1][keep]
    wd, tried = 0.0, {}
    if val is not None:
        wd, tried = search_weight_decay((xtr, ytr), val, out_dim, cfg)
        if cfg.fewshot_k < 0:  # full data: refit on train + validation; few-shot: on the k shots only
            xtr, ytr = torch.cat([xtr, val[0].to(xtr.dtype)]), torch.cat([ytr, val[1].to(ytr.dtype)])
    head = train_head(xtr, ytr, out_dim, wd, cfg)
    logits = head_logits(head, test[0], cfg)
    with_acc5 = test[1].numel() > 0 and int(test[1].max()) >= 5
    metrics = probe_metrics(logits, test[1], wd, cfg, with_acc5)
    used = {**asdict(cfg), "weight_decay": wd, "n_train": int(xtr.shape[0]), "wd_search": tried,
            "num_outputs": out_dim, "permutation_rng": rng.describe()}
    log.info("linear probe (clip_benchmark protocol): wd %.3g, %d training samples, top-1 %s",
             wd, xtr.shape[0], metrics["lp_acc1"])
    return head, metrics, used
