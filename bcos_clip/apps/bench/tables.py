"""Markdown tables of the accounting sections of `bcos-clip bench` (--memory, --model-cost)."""
from __future__ import annotations

from typing import Any, Dict, List

ORDER = ("plain", "bcos-reference", "bcos-formula", "bcos-fast-v1", "bcos-fast")


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "" if v is None else fmt.format(v)


def memory_table(memory: Dict[str, Any], batch: int) -> str:
    lines = [f"| tower | variant | saved MiB (b={batch}) | x plain | CPU autocast x plain | weight casts MiB | "
             "largest kinds (MiB) |", "|---|---|---|---|---|---|---|"]
    for model, m in memory.items():
        for v in ORDER:
            s = m["variants"].get(v)
            if s is None:
                continue
            kinds = ", ".join(f"{k} {x:.0f}" for k, x in list(s["by_kind_mib"].items())[:3])
            lines.append(f"| {model} | {v} | {s['saved_mib']:.0f} | {s['ratio_vs_plain']:.2f} | "
                         f"{s['cpu_autocast_ratio_vs_plain']:.2f} | {s['weight_cast_mib']:.0f} | {kinds} |")
    return "\n".join(lines)


def top_table(memory: Dict[str, Any], variant: str = "bcos-fast", n: int = 6) -> str:
    lines = ["| tower | module | saved by | dtype | shape | count | MiB |", "|---|---|---|---|---|---|---|"]
    for model, m in memory.items():
        for r in m["variants"][variant]["top"][:n]:
            lines.append(f"| {model} | {r['module']} | {r['producer']} | {r['dtype']} | {r['shape']} | "
                         f"{r['count']} | {r['mib']:.0f} |")
    return "\n".join(lines)


def linearity_table(memory: Dict[str, Any]) -> str:
    lines = ["| tower | variant | real CPU batches | saved MiB | per image MiB | constant MiB | fake b | fake MiB | "
             "extrapolated MiB | diff |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model, m in memory.items():
        for r in m["linearity"]:
            lines.append(f"| {model} | {r['variant']} | {r['real_batches'][0]}, {r['real_batches'][1]} | "
                         f"{r['real_saved_mib'][0]:.1f}, {r['real_saved_mib'][1]:.1f} | {r['per_image_mib']:.2f} | "
                         f"{r['constant_mib']:.1f} | {r['fake_batch']} | {r['fake_saved_mib']:.0f} | "
                         f"{r['extrapolated_mib']:.0f} | {100 * r['rel_diff']:.2f} % |")
    return "\n".join(lines)


def cost_table(cost: Dict[str, Any], batch: int) -> str:
    spec = cost["device_spec"]
    lines = [f"| tower | variant | fwd ms | step ms | fwd x plain | step x plain | kernels | GB moved | TFLOP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, t in cost["towers"].items():
        for v in ORDER:
            r = t.get(v)
            if r is not None:
                lines.append(f"| {model} | {v} | {r['forward_ms']:.1f} | {r['step_ms']:.1f} | "
                             f"{r['forward_ratio']:.2f} | {r['step_ratio']:.2f} | {r['launches']} | "
                             f"{r['gbytes']:.0f} | {r['tflop']:.2f} |")
    return f"Modelled on {spec['name']} (batch {batch}):\n\n" + "\n".join(lines)


def validation_table(validation: Dict[str, Any]) -> str:
    if "note" in validation:
        return validation["note"]
    lines = [f"Measured on {validation['measured_on']}.", "",
             "| tower | row | variant (modelled as) | predicted x plain | measured x plain | error | "
             "predicted ms | measured ms |", "|---|---|---|---|---|---|---|---|"]
    for r in validation.get("cost", []):
        lines.append(f"| {r['model']} | {r['row']} | {r['variant']} ({r['modelled_as']}) | {r['predicted_ratio']:.2f} | "
                     f"{r['measured_ratio']:.2f} | {100 * r['error']:+.0f} % | {r['predicted_ms']:.1f} | "
                     f"{r['measured_ms']:.1f} |")
    if validation.get("memory"):
        lines += ["", "| tower | variant (modelled as) | predicted peak GiB | measured peak GiB | error | "
                      "predicted x plain | measured x plain |", "|---|---|---|---|---|---|---|"]
        for r in validation["memory"]:
            lines.append(f"| {r['model']} | {r['variant']} ({r['modelled_as']}) | {r['predicted_peak_gib']:.2f} | "
                         f"{r['measured_peak_gib']:.2f} | {100 * r['error']:+.0f} % | {_f(r.get('predicted_ratio'))} | "
                         f"{_f(r.get('measured_ratio'))} |")
    return "\n".join(lines)


def targets_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| target | value | limit | met |", "|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['value']:.2f} | {r['limit']} | {'yes' if r['met'] else 'NO'} |" for r in rows]
    return "\n".join(lines)


def accounting_markdown(acc: Dict[str, Any]) -> str:
    parts = []
    if "memory" in acc:
        parts += ["## Saved for backward", memory_table(acc["memory"], acc["batch"]), "",
                  "Largest saved groups of the B-cos fast towers:", "", top_table(acc["memory"]), "",
                  "Batch linearity:", "", linearity_table(acc["memory"])]
    if "cost" in acc:
        parts += ["", "## Cost model", cost_table(acc["cost"], acc["batch"])]
    parts += ["", "## Targets", targets_table(acc["targets"]), "", "## Validation", validation_table(acc["validation"])]
    return "\n".join(parts)
