"""One JSON from the parts of benchmarks/gpu_check.sh: environment, Triton check, training runs, bench rows
and targets, and the CPU accounting (--memory / --model-cost) validated against the rows of this run.

    python benchmarks/gpu_check_merge.py OUT_DIR      -> OUT_DIR/gpu_check.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from bcos_clip.apps.bench import tables as bench_tables
from bcos_clip.apps.bench import validate as bench_validate
from bcos_clip.apps.bench.memory import MIB

GIB = float(1 << 30)


def _load(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return {"status": "unreadable", "error": f"{path.name}: {exc.msg} at line {exc.lineno}"}


def validate_this_run(accounting: Dict[str, Any], bench: Dict[str, Any]) -> Dict[str, Any]:
    """The accounting's predictions (current code) against this run's measured eager rows."""
    measured = {**bench, "source": "this run"}
    batch = accounting.get("batch", 128)
    out: Dict[str, Any] = {"measured_on": bench_validate.device_of(measured)}
    cost = accounting.get("cost", {}).get("towers", {})
    if cost:
        pred = {m: {v: {"forward_ms": r["forward_ms"], "step_ms": r["step_ms"]} for v, r in t.items()}
                for m, t in cost.items()}
        out["cost"] = bench_validate.validate_cost(pred, measured, batch)
    mem = accounting.get("memory", {})
    if mem:
        saved = {m: {v: s["saved_mib"] * MIB / GIB for v, s in t["variants"].items()} for m, t in mem.items()}
        params = {m: {v: s["param_gib"] for v, s in t["variants"].items()} for m, t in mem.items()}
        out["memory"] = bench_validate.validate_memory(saved, params, measured, batch)
    return out


def merge(out_dir: Path) -> Dict[str, Any]:
    env = out_dir / "env.txt"
    result: Dict[str, Any] = {"environment": env.read_text() if env.is_file() else None}
    for part in ("layers", "train", "bench", "accounting"):
        result[part] = _load(out_dir / f"{part}.json")
    acc = (result["accounting"] or {}).get("accounting")
    bench = result["bench"]
    if acc and bench and bench.get("rows") and not acc.get("quick"):
        result["validation_this_run"] = validate_this_run(acc, bench)
        result["validation_table"] = bench_tables.validation_table(result["validation_this_run"])
    return result


def main(argv: list) -> int:
    out_dir = Path(argv[0])
    result = merge(out_dir)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    parts = {k: ("missing" if result[k] is None else result[k].get("status", "ok"))
             for k in ("layers", "train", "bench", "accounting")}
    print(f"gpu_check.json: {parts}")
    if "validation_table" in result:
        print(result["validation_table"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
