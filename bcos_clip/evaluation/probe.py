"""Linear-probe protocols by name: ``clip_benchmark`` (the default: CLIP_benchmark's, so numbers are
comparable with its published tables) and ``paper`` (METHOD.md §5).

Example::

    cfg = ProbeConfig(protocol="paper").resolved(eval_batch_size=64)
    head, metrics, used = run_probe(train, test, num_classes, cfg)   # metrics["lp_acc1"], ...
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch

from bcos_clip.evaluation import linear_probe, probe_clip_benchmark
from bcos_clip.evaluation.linear_probe import PROBE_PROTOCOLS, ProbeConfig
from bcos_clip.evaluation.probe_rng import ClipBenchmarkRng

Split = Tuple[torch.Tensor, torch.Tensor]
ProbeFn = Callable[[Split, Split, int, ProbeConfig, Optional[Split], Optional[ClipBenchmarkRng]],
                   Tuple[torch.nn.Linear, Dict[str, Any], dict]]


def _paper(train: Split, test: Split, num_classes: int, cfg: ProbeConfig, val: Optional[Split],
           rng: Optional[ClipBenchmarkRng]) -> Tuple[torch.nn.Linear, Dict[str, Any], dict]:
    """METHOD.md §5's probe: deterministic from ``cfg.seed``; CLIP_benchmark's RNG plays no part."""
    return linear_probe.fit_and_evaluate(train, test, num_classes, cfg, val)


PROTOCOLS: Dict[str, ProbeFn] = {
    "clip_benchmark": probe_clip_benchmark.fit_and_evaluate,
    "paper": _paper,
}
assert set(PROTOCOLS) == set(PROBE_PROTOCOLS)


def run_probe(train: Split, test: Split, num_classes: int, cfg: ProbeConfig, val: Optional[Split] = None,
              rng: Optional[ClipBenchmarkRng] = None) -> Tuple[torch.nn.Linear, Dict[str, Any], dict]:
    """Fit and score a probe with ``cfg.protocol`` (``cfg`` resolved). train / test / val: features
    (N, D) and targets (N,) int64; ``rng``: CLIP_benchmark's global RNG at its probe
    (:mod:`probe_rng`; None: from ``cfg.seed``). Returns (head, record metrics, settings used)."""
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(f"--probe-protocol {cfg.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[cfg.protocol](train, test, num_classes, cfg, val, rng)
