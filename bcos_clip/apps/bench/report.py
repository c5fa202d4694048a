"""Ratios, targets and the markdown table of `bcos-clip bench` (all from rows of the same run)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from bcos_clip.apps.bench.timing import Row

TOWER_SECTIONS = ("train", "train_fwd", "infer")
# (label, model, compare, limit, kind): kind "max" means value <= limit is met, "min" value >= limit.
TOWER_TARGETS = (
    ("training step, compiled: B-cos fast / plain", "RN50", ("train", True, "ratio_vs_plain"), 1.08, "max"),
    ("training step, compiled: B-cos fast / plain", "ViT-B-16", ("train", True, "ratio_vs_plain"), 1.10, "max"),
    ("forward, compiled: B-cos fast / plain", "RN50", ("train_fwd", True, "ratio_vs_plain"), 1.10, "max"),
    ("forward, compiled: B-cos fast / plain", "ViT-B-16", ("train_fwd", True, "ratio_vs_plain"), 1.10, "max"),
    ("peak training memory, compiled: B-cos fast / plain", "RN50", ("train", True, "mem_ratio_vs_plain"), 1.25,
     "max"),
    ("peak training memory, compiled: B-cos fast / plain", "ViT-B-16", ("train", True, "mem_ratio_vs_plain"),
     1.25, "max"),
    ("training step, eager: reference / fast (speed-up)", "RN50", ("train", False, "speedup_vs_reference"),
     2.5, "min"),
    ("training step, eager: reference / fast (speed-up)", "ViT-B-16", ("train", False, "speedup_vs_reference"),
     2.5, "min"),
)


def _key(r: Row) -> Tuple[Any, ...]:
    return r.get("section"), r.get("model"), r.get("batch"), bool(r.get("compiled"))


def _ok(r: Row) -> bool:
    return r.get("status", "ok") == "ok" and r.get("ms") is not None


def add_ratios(rows: List[Row]) -> None:
    """ratio_vs_plain (time), mem_ratio_vs_plain (peak memory) and, for eager B-cos rows,
    speedup_vs_reference = reference ms / this ms, all against rows of the same section/model/batch."""
    plain = {_key(r): r for r in rows if r.get("variant") == "plain" and _ok(r)}
    ref = {_key(r): r for r in rows if r.get("variant") == "bcos-reference" and _ok(r)}
    for r in rows:
        if r.get("section") not in TOWER_SECTIONS or not _ok(r) or r.get("variant") == "plain":
            continue
        p = plain.get(_key(r))
        if p is not None:
            r["ratio_vs_plain"] = r["ms"] / p["ms"]
            if r.get("peak_mem_gib") and p.get("peak_mem_gib"):
                r["mem_ratio_vs_plain"] = r["peak_mem_gib"] / p["peak_mem_gib"]
        q = ref.get(_key(r))
        if q is not None and r.get("variant") != "bcos-reference":
            r["speedup_vs_reference"] = q["ms"] / r["ms"]


def _find(rows: List[Row], **match: Any) -> Optional[Row]:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and _ok(r):
            return r
    return None


def _target(label: str, value: Optional[float], limit: float, kind: str, unit: str = "") -> Dict[str, Any]:
    met = None if value is None else (value <= limit if kind == "max" else value >= limit)
    sign = "<=" if kind == "max" else ">="
    return {"target": label, "value": value, "limit": f"{sign} {limit}{unit}", "met": met}


def targets(rows: List[Row], batch: int) -> List[Dict[str, Any]]:
    """The issue's targets, each with its measured value (None when the row did not run)."""
    out = []
    for label, model, (section, compiled, field), limit, kind in TOWER_TARGETS:
        r = _find(rows, section=section, model=model, variant="bcos-fast", batch=batch, compiled=compiled)
        out.append(_target(f"{model} {label} (b{batch})", None if r is None else r.get(field), limit, kind))
    k16 = _find(rows, section="explain", variant="K=16")
    sep = _find(rows, section="explain", variant="16 separate K=1 calls")
    ratio = k16["ms"] / sep["ms"] if k16 and sep else None
    out.append(_target("explanations: K=16 batched / 16 separate", ratio, 0.35, "max"))
    cached = _find(rows, section="explain", variant="cached tensor: 16 new prompts")
    out.append(_target("explanations: cached tensor, 16 new prompts (ms)", cached and cached["ms"], 5.0,
                       "max", " ms"))
    e2e = _find(rows, section="e2e", variant="end to end")
    out.append(_target("end-to-end distillation / (teacher + student step)", e2e and e2e.get("ratio_vs_compute"),
                       0.9, "min"))
    return out


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(rows: List[Row]) -> str:
    """A markdown table of every row: img/s, ms, peak memory and the ratios."""
    head = "| row | img/s | ms | peak GiB | x plain | mem x plain | speed-up vs ref | status |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        status = r.get("status", "ok")
        if status != "ok":
            status = f"{status}: {r.get('note') or r.get('error') or ''}"[:80]
        ms = r.get("ms") if r.get("ms") is not None else r.get("compile_s") and r["compile_s"] * 1000.0
        lines.append("| " + " | ".join([
            r.get("name", "?"), _fmt(r.get("img_per_s"), 0), _fmt(ms), _fmt(r.get("peak_mem_gib")),
            _fmt(r.get("ratio_vs_plain"), 3), _fmt(r.get("mem_ratio_vs_plain"), 3),
            _fmt(r.get("speedup_vs_reference")), status]) + " |")
    return "\n".join(lines)


def targets_table(items: List[Dict[str, Any]]) -> str:
    lines = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for t in items:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"| {t['target']} | {_fmt(t['value'], 3)} | {t['limit']} | {met} |")
    return "\n".join(lines)
