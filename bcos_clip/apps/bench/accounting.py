"""The accounting sections of `bcos-clip bench`: `--memory` and `--model-cost`, run on CPU.

For every model (RN50, ViT-B-16 at their 224 px; tiny towers with --quick) and tower variant, at the
benchmark batch (128) on fake tensors, under CUDA bf16 autocast's dtypes:
- memory: bytes saved for backward (bench_memory), per layer kind and top contributors, the ratio to
  the plain tower, the same under CPU autocast, and the batch-linearity check (real CPU runs at two small
  batches extrapolated vs the fake count);
- cost: per-op FLOPs / bytes / launches and the roofline time on a named device (bench_cost);
- both: the issue's targets, and the validation against measured rows (bench_validate).
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from bcos_clip.apps.bench import validate as bench_validate
from bcos_clip.apps.bench.cost import DEVICE_SPECS, count_step
from bcos_clip.apps.bench.memory import MIB, account, linearity
from bcos_clip.apps.bench.step import VARIANT_FEATURES, subject
from bcos_clip.apps.bench.towers import ModelSet, build_modelset

log = logging.getLogger(__name__)
GIB = float(1 << 30)
# issue 16: saved-for-backward bytes and the modelled eager step, B-cos fast / plain, bf16, batch 128
TARGETS = {"saved": {"RN50": 1.25, "ViT-B-16": 1.25}, "step": {"RN50": 1.4, "ViT-B-16": 1.3}}


@dataclass(frozen=True)
class AccountingConfig:
    models: Tuple[str, ...] = ("RN50", "ViT-B-16")
    quick: bool = False
    batch: int = 128
    real_batches: Tuple[int, int] = (2, 4)
    device_spec: str = "h200"
    measured: Optional[str] = None  # a bench JSON to validate against (default: the H200 run, if present)
    triton: bool = True

    def __post_init__(self) -> None:
        if self.device_spec not in DEVICE_SPECS:
            raise ValueError(f"bench: --device-spec {self.device_spec!r}: choose one of {', '.join(DEVICE_SPECS)}")
        if self.batch < 1 or min(self.real_batches) < 1 or self.real_batches[0] == self.real_batches[1]:
            raise ValueError("bench: accounting batches must be >= 1 and the two real batches distinct")


def _param_gib(ms: ModelSet, variant: str) -> float:
    tower = subject(ms, variant).tower
    return sum(p.numel() * p.element_size() for p in tower.parameters()) / GIB


def memory_model(ms: ModelSet, cfg: AccountingConfig) -> Dict[str, Any]:
    """Saved bytes of every variant (fake, batch cfg.batch, CUDA and CPU autocast) + linearity checks."""
    out: Dict[str, Any] = {"variants": {}, "linearity": []}
    for v in VARIANT_FEATURES:
        acc = account(subject(ms, v), cfg.batch, "cuda", fake=True)
        summ = acc.summary()
        summ["cpu_autocast_saved_mib"] = account(subject(ms, v), cfg.batch, "cpu", fake=True).total_bytes / MIB
        summ["param_gib"] = _param_gib(ms, v)
        out["variants"][v] = summ
    plain = out["variants"]["plain"]
    for v, summ in out["variants"].items():
        summ["ratio_vs_plain"] = summ["saved_mib"] / plain["saved_mib"]
        summ["cpu_autocast_ratio_vs_plain"] = summ["cpu_autocast_saved_mib"] / plain["cpu_autocast_saved_mib"]
    for v in ("plain", "bcos-fast"):
        out["linearity"].append(linearity(subject(ms, v), cfg.real_batches, cfg.batch, "cuda"))
    return out


def cost_model(ms: ModelSet, cfg: AccountingConfig) -> Dict[str, Any]:
    """Roofline totals, per-kind and top ops of every variant on cfg.device_spec."""
    spec = DEVICE_SPECS[cfg.device_spec]
    out: Dict[str, Any] = {}
    for v in VARIANT_FEATURES:
        acc = count_step(subject(ms, v), cfg.batch, triton=cfg.triton)
        tot = acc.totals(spec)
        by_kind: Dict[str, float] = collections.Counter()
        by_op: Dict[Tuple[str, str, str], List[float]] = collections.defaultdict(lambda: [0.0, 0, 0.0, 0.0])
        for op, t in acc.predict(spec):
            by_kind[f"{op.phase} {op.kind}"] += t * 1e3
            agg = by_op[(op.phase, op.kind, op.op)]
            agg[0] += t * 1e3
            agg[1] += op.launches
            agg[2] += op.bytes / 1e9
            agg[3] += op.flops / 1e9
        ops = [{"phase": k[0], "kind": k[1], "op": k[2], "ms": x[0], "launches": x[1], "gbytes": x[2],
                "gflop": x[3]} for k, x in sorted(by_op.items(), key=lambda kv: -kv[1][0])]
        out[v] = {"forward_ms": tot["forward_s"] * 1e3, "backward_ms": tot["backward_s"] * 1e3,
                  "step_ms": tot["step_s"] * 1e3,
                  "launches": int(tot["forward_launches"] + tot["backward_launches"]),
                  "gbytes": (tot["forward_bytes"] + tot["backward_bytes"]) / 1e9,
                  "tflop": (tot["forward_flops"] + tot["backward_flops"]) / 1e12,
                  "by_kind_ms": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
                  "top_ops": ops[:12], "ops": ops}  # every aten op (phase, layer kind), summed
    for v, row in out.items():
        row["forward_ratio"] = row["forward_ms"] / out["plain"]["forward_ms"]
        row["step_ratio"] = row["step_ms"] / out["plain"]["step_ms"]
    return out


def targets(memory: Dict[str, Any], cost: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for model, limit in TARGETS["saved"].items():
        if model in memory:
            v = memory[model]["variants"]["bcos-fast"]["ratio_vs_plain"]
            rows.append({"target": f"{model} saved-for-backward bytes, B-cos fast / plain", "value": v,
                         "limit": f"<= {limit}", "met": v <= limit})
    for model, limit in TARGETS["step"].items():
        if model in cost:
            v = cost[model]["bcos-fast"]["step_ratio"]
            rows.append({"target": f"{model} modelled eager training step, B-cos fast / plain", "value": v,
                         "limit": f"<= {limit}", "met": v <= limit})
    return rows


def run_accounting(cfg: AccountingConfig, memory: bool, cost: bool,
                   measured: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Both sections on CPU (fake tensors; the linearity check runs real CPU steps at small batches)."""
    t0 = time.perf_counter()
    result: Dict[str, Any] = {"batch": cfg.batch, "policy": "cuda bf16 autocast (emulated on CPU)",
                              "quick": cfg.quick}
    mem: Dict[str, Any] = {}
    cst: Dict[str, Any] = {}
    for name in cfg.models:
        ms = build_modelset(name, torch.device("cpu"), cfg.quick)
        if memory:
            mem[name] = memory_model(ms, cfg)
            log.info("bench memory %s done (%.0f s)", name, time.perf_counter() - t0)
        if cost:
            cst[name] = cost_model(ms, cfg)
            log.info("bench model-cost %s done (%.0f s)", name, time.perf_counter() - t0)
    if memory:
        result["memory"] = mem
    if cost:
        spec = DEVICE_SPECS[cfg.device_spec]
        result["cost"] = {"device_spec": {"key": cfg.device_spec, **spec.__dict__}, "towers": cst}
    result["targets"] = targets(mem, cst) if not cfg.quick else []  # the targets are for the full towers
    result["validation"] = _validation(cfg, mem, cst, measured)
    result["elapsed_s"] = time.perf_counter() - t0
    return result


def _validation(cfg: AccountingConfig, mem: Dict[str, Any], cst: Dict[str, Any],
                measured: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if cfg.quick:
        return {"note": "--quick counts tiny towers: no measured rows to hold them against"}
    if measured is None:
        measured = bench_validate.load_measured(cfg.measured)
    if measured is None:
        return {"note": "no measured rows (give --measured FILE)"}
    out: Dict[str, Any] = {"measured_on": bench_validate.device_of(measured)}
    if cst:
        pred = {m: {v: {"forward_ms": r["forward_ms"], "step_ms": r["step_ms"]} for v, r in t.items()}
                for m, t in cst.items()}
        out["cost"] = bench_validate.validate_cost(pred, measured, cfg.batch)
    if mem:
        saved = {m: {v: s["saved_mib"] * MIB / GIB for v, s in t["variants"].items()} for m, t in mem.items()}
        params = {m: {v: s["param_gib"] for v, s in t["variants"].items()} for m, t in mem.items()}
        out["memory"] = bench_validate.validate_memory(saved, params, measured, cfg.batch)
    return out
