"""The accounting of `bcos-clip bench --memory / --model-cost` held against measured GPU rows.

Measured rows are `bcos-clip bench` rows (train = training step, train_fwd = its forward) of the same
run on a GPU, or of a JSON file (`--measured`; default: this repository's H200 run of 2026-11-26). The
model is run on the code that was measured: a file records its fast-path features (`fast_features`);
the 2026-11-26 run predates that field and the BatchNorm Function, so its `bcos-fast` rows are modelled
as `bcos-fast-v1` (the B-cos scale Functions only).

For every model, row kind and variant: predicted and measured ratio to the plain tower of the same run
and the error predicted / measured - 1; absolute predicted and measured milliseconds and peak memory,
with the device named.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from bcos_clip.apps.bench.step import VARIANT_FEATURES

DEFAULT_MEASURED = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "h200_bench_2026-11-26.json"
GIB = float(1 << 30)


def load_measured(path: Optional[str]) -> Optional[Dict[str, Any]]:
    """A bench result JSON (rows + environment), or None when no file is given and the default is absent."""
    p = Path(path) if path else DEFAULT_MEASURED
    if not p.is_file():
        if path:
            raise ValueError(f"--measured {path}: no such file")
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--measured {p}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"--measured {p}: expected a `bcos-clip bench` result with a 'rows' list")
    data["source"] = str(p)
    return data


def modelled_variant(measured: Dict[str, Any], variant: str) -> str:
    """The accounting variant that reproduces the code behind a measured row (see module docstring)."""
    if variant != "bcos-fast":
        return variant
    feats = measured.get("fast_features")
    if feats is None:
        return "bcos-fast-v1"
    return "bcos-fast" if tuple(sorted(feats)) == tuple(sorted(_all_features())) else "bcos-fast-v1"


def _all_features() -> List[str]:
    from bcos_clip.nn.fused import FEATURES

    return list(FEATURES)


def measured_rows(measured: Dict[str, Any], batch: int) -> Dict[tuple, Dict[str, Any]]:
    """(section, model, variant) -> eager row at `batch` with a time."""
    out = {}
    for r in measured.get("rows", []):
        if (r.get("section") in ("train", "train_fwd") and not r.get("compiled") and r.get("batch") == batch
                and r.get("ms") is not None and r.get("status", "ok") == "ok"):
            out[(r["section"], r["model"], r["variant"])] = r
    return out


def _err(pred: Optional[float], meas: Optional[float]) -> Optional[float]:
    return None if pred is None or not meas else pred / meas - 1.0


def validate_cost(predicted: Dict[str, Dict[str, Dict[str, float]]], measured: Dict[str, Any],
                  batch: int) -> List[Dict[str, Any]]:
    """predicted[model][accounting variant] = {"forward_ms", "step_ms"}; one row per measured ratio."""
    rows = measured_rows(measured, batch)
    out = []
    for (section, model, variant), r in sorted(rows.items()):
        plain = rows.get((section, model, "plain"))
        mv = modelled_variant(measured, variant)
        pred = predicted.get(model, {})
        key = "step_ms" if section == "train" else "forward_ms"
        if variant == "plain" or plain is None or mv not in pred or "plain" not in pred:
            continue
        p_ratio = pred[mv][key] / pred["plain"][key]
        m_ratio = r["ms"] / plain["ms"]
        out.append({"model": model, "row": "step" if section == "train" else "forward", "variant": variant,
                    "modelled_as": mv, "predicted_ratio": p_ratio, "measured_ratio": m_ratio,
                    "error": _err(p_ratio, m_ratio), "predicted_ms": pred[mv][key], "measured_ms": r["ms"],
                    "predicted_plain_ms": pred["plain"][key], "measured_plain_ms": plain["ms"]})
    return out


def validate_memory(predicted: Dict[str, Dict[str, float]], param_gib: Dict[str, Dict[str, float]],
                    measured: Dict[str, Any], batch: int) -> List[Dict[str, Any]]:
    """predicted[model][variant] = saved GiB; modelled peak = the tower's fp32 parameters + saved bytes
    (the peak of a step is at the end of its forward: measured train and train_fwd peaks agree)."""
    rows = measured_rows(measured, batch)
    out = []
    for (section, model, variant), r in sorted(rows.items()):
        mv = modelled_variant(measured, variant)
        if section != "train" or r.get("peak_mem_gib") is None or mv not in predicted.get(model, {}):
            continue
        peak = predicted[model][mv] + param_gib[model][mv]
        plain = rows.get(("train", model, "plain"))
        row = {"model": model, "variant": variant, "modelled_as": mv, "predicted_peak_gib": peak,
               "measured_peak_gib": r["peak_mem_gib"], "error": _err(peak, r["peak_mem_gib"])}
        if variant != "plain" and plain is not None and "plain" in predicted[model]:
            p_plain = predicted[model]["plain"] + param_gib[model]["plain"]
            row.update(predicted_ratio=peak / p_plain, measured_ratio=r["peak_mem_gib"] / plain["peak_mem_gib"],
                       saved_ratio=predicted[model][mv] / predicted[model]["plain"])
            row["ratio_error"] = _err(row["predicted_ratio"], row["measured_ratio"])
        out.append(row)
    return out


def device_of(measured: Dict[str, Any]) -> str:
    env = measured.get("environment", {})
    src = str(measured.get("source", "this run"))
    root = str(DEFAULT_MEASURED.parents[2]) + "/"
    return f"{env.get('device_name', '?')} (torch {env.get('torch', '?')}, {src.replace(root, '')})"


def needed_variants(measured: Optional[Dict[str, Any]]) -> List[str]:
    """Accounting variants to run for a validation (all that exist when nothing is measured)."""
    if measured is None:
        return list(VARIANT_FEATURES)
    names = {r.get("variant") for r in measured.get("rows", []) if r.get("section") in ("train", "train_fwd")}
    return sorted({"plain", "bcos-fast"} | {modelled_variant(measured, v) for v in names if v in VARIANT_FEATURES})
