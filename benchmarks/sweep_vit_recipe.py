"""The B-cos ViT recipe, measured: ``bcos-clip demo --arch vit`` with one conversion / distillation choice
changed per row, on the same cached world and teacher, one row per (choice, seed).

A base demo folder per seed (``<out>/base_s<seed>``, a plain ``run_demo``) trains the world, the teacher
and the default student once. Each row copies the base's world, teacher and teacher evaluation into
``<out>/<row>_s<seed>`` and runs the demo there with the row's overrides merged into the settings'
``arch: vit`` section, so only the conversion, the distillation, the student's evaluation, the
explanations and the pointing game run again (rows evaluate zero-shot classification only). One JSON line per row goes to ``<out>/recipe.jsonl``:
retention per group, the pointing scores (student and best post-hoc baseline on the teacher), the
completeness check, and the CPU seconds of the student's stages (distil + evaluate + explain + point).

    python benchmarks/sweep_vit_recipe.py --out /tmp/recipe --seeds 0 1 --rows default qk_linear
    python benchmarks/sweep_vit_recipe.py --out /tmp/recipe --table   # the markdown table of recipe.jsonl

Rows are ``ROWS`` below (name -> overrides of the ``distill`` / ``teacher`` sections); run under ``nice``
with ``--threads 1`` beside other work: CPU seconds change little with load, wall time does. Two sweeps
with ``--threads 2`` each on the 2-core machine spent nearly all their time in the kernel (top: 100 % sy;
4.5 s per distillation step instead of ~0.5, 2026-12-01): give each of several runs one thread.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List

import yaml

from bcos_clip.apps.demo.run import run_demo
from bcos_clip.apps.demo.config import DemoConfig, settings_path
from bcos_clip.data.shapes.world import DEMO_TASKS
from bcos_clip.models.loading import deep_merge

# name -> (what it changes, overrides merged into `arch: vit`)
ROWS: Dict[str, tuple] = {
    "default": ("the shipped settings", {}),
    "shipped": ("the shipped settings, student rerun in its own folder (e.g. with another thread count)", {}),
    "qk_linear": ("q/k plain linears", {"distill": {"bcos_qk": "linear"}}),
    "ln_uncentered": ("LayerNorm uncentered (RMS)", {"distill": {"bcos_layernorm": "uncentered"}}),
    "bias_kept": ("biases kept (LayerNorm, linear, attention)", {"distill": {"bcos_bias": True}}),
    "lr_1e-3": ("distillation lr 1e-3", {"distill": {"lr": 1.0e-3}}),
    "lr_2e-3": ("distillation lr 2e-3", {"distill": {"lr": 2.0e-3}}),
    "lr_3e-3": ("distillation lr 3e-3", {"distill": {"lr": 3.0e-3}}),
    "lr_5e-3": ("distillation lr 5e-3", {"distill": {"lr": 5.0e-3}}),
    "tok_teacher": ("class-token teacher (pool_type tok)", {"teacher": {"vision": {"pool_type": "tok"}}}),
    "avg_teacher": ("average-pooled teacher (pool_type avg)", {"teacher": {"vision": {"pool_type": "avg"}}}),
    "pool_then_ln": ("teacher pools, then LayerNorm (final_ln_after_pool)",
                     {"teacher": {"vision": {"final_ln_after_pool": True}}}),
    "pos_input": ("positional embedding as input term", {"distill": {"bcos_positional": "input"}}),
    "pos_drop": ("patch positional embedding dropped", {"distill": {"bcos_positional": "drop"}}),
    "steps_450": ("450 distillation steps", {"distill": {"steps": 450}}),
    "steps_600": ("600 distillation steps", {"distill": {"steps": 600}}),
    "steps_900": ("900 distillation steps", {"distill": {"steps": 900}}),
    "b_1.5": ("B = 1.5", {"distill": {"bcos_b": 1.5}}),
    "b_2.5": ("B = 2.5", {"distill": {"bcos_b": 2.5}}),
    "temp_0.1": ("distillation temperature 0.1", {"distill": {"temperature": 0.1}}),
    "temp_0.02": ("distillation temperature 0.02", {"distill": {"temperature": 0.02}}),
    "warmup_30": ("30 warm-up steps", {"distill": {"warmup": 30}}),
    "pos_drop_600": ("positions dropped, 600 steps", {"distill": {"bcos_positional": "drop", "steps": 600}}),
    "qk_linear_600": ("q/k plain linears, 600 steps", {"distill": {"bcos_qk": "linear", "steps": 600}}),
    "caption_0.1": ("text_kd + 0.1 x (1 - cos(student, own caption))", {"distill": {"caption_weight": 0.1}}),
    "caption_0.3": ("text_kd + 0.3 x (1 - cos(student, own caption))", {"distill": {"caption_weight": 0.3}}),
    "caption_1": ("text_kd + 1 x (1 - cos(student, own caption))", {"distill": {"caption_weight": 1.0}}),
    "loss_cosine": ("cosine distillation loss", {"distill": {"loss": "cosine"}}),
    "loss_siglip": ("siglip distillation loss (the paper's)", {"distill": {"loss": "siglip"}}),
    "pos_scale_0.5": ("patch positions x 0.5 at conversion", {"distill": {"bcos_positional_scale": 0.5}}),
    "pos_scale_0.25": ("patch positions x 0.25 at conversion", {"distill": {"bcos_positional_scale": 0.25}}),
    "pos_scale_0.1": ("patch positions x 0.1 at conversion", {"distill": {"bcos_positional_scale": 0.1}}),
    "pos_0.25_900": ("patch positions x 0.25, 900 distillation steps",
                     {"distill": {"loss": "text_kd", "bcos_positional_scale": 0.25, "steps": 900}}),
    "pos_0.25_750": ("patch positions x 0.25, 750 distillation steps",
                     {"distill": {"loss": "text_kd", "bcos_positional_scale": 0.25, "steps": 750}}),
    "text_kd_pos_0.25": ("text_kd, patch positions x 0.25",
                         {"distill": {"loss": "text_kd", "bcos_positional_scale": 0.25}}),
    "text_kd_900": ("text_kd, patch positions unscaled, 900 distillation steps",
                    {"distill": {"loss": "text_kd", "bcos_positional_scale": 1.0, "steps": 900}}),
    "text_kd": ("text_kd, patch positions unscaled", {"distill": {"loss": "text_kd", "bcos_positional_scale": 1.0}}),
    "cosine_pos_0.25": ("cosine loss, patch positions x 0.25",
                        {"distill": {"loss": "cosine", "bcos_positional_scale": 0.25}}),
}
STUDENT_STAGES = ("bcosify", "eval_student", "eval_bcosified", "explain", "pointing")  # + distill_<loss>
COPY = ("world", "teacher", "eval/cache")


def zeroshot_suite(out: Path) -> Path:
    """The demo suite's classification tasks, zero-shot only (a row needs no probe or retrieval)."""
    path = out / "suite_zeroshot.yaml"
    datasets = [{"name": n, "group": g} for n, g in DEMO_TASKS.items()]
    path.write_text(yaml.safe_dump({"name": "demo_zeroshot", "tasks": ["zeroshot_classification"],
                                    "datasets": datasets}, sort_keys=False))
    return path


def settings_file(out: Path, name: str, overrides: Dict[str, Any]) -> Path:
    """The shipped demo.yaml with ``overrides`` merged into its ``arch: vit`` section, written to ``out``."""
    if name != "default":
        overrides = deep_merge({"eval": {"suite": str(zeroshot_suite(out))}}, overrides)
    data = yaml.safe_load(settings_path().read_text(encoding="utf-8"))
    data.setdefault("arch", {})["vit"] = deep_merge(data.get("arch", {}).get("vit") or {}, copy.deepcopy(overrides))
    path = out / f"settings_{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _seed_row_folder(base: Path, folder: Path, same_teacher: bool) -> None:
    """Copy the base run's world (and teacher and its evaluation, when the row keeps the teacher)."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel in COPY if same_teacher else ("world",):
        if (base / rel).exists() and not (folder / rel).exists():
            shutil.copytree(base / rel, folder / rel)
    stages = ("world", "teacher", "eval_teacher") if same_teacher else ("world",)
    (folder / "stages").mkdir(exist_ok=True)
    for stage in stages:
        src = base / "stages" / f"{stage}.json"
        if src.is_file() and not (folder / "stages" / src.name).exists():
            shutil.copy2(src, folder / "stages" / src.name)
    if same_teacher and (base / "eval" / "results" / "teacher").exists() and \
            not (folder / "eval" / "results" / "teacher").exists():
        shutil.copytree(base / "eval" / "results" / "teacher", folder / "eval" / "results" / "teacher")


def run_row(out: Path, name: str, seed: int, threads: int) -> Dict[str, Any]:
    what, overrides = ROWS[name]
    settings = settings_file(out, name, overrides)
    base = out / f"base_s{seed}"
    if name != "default" and not (base / "summary.json").is_file():
        run_row(out, "default", seed, threads)
    folder = base if name == "default" else out / f"{name}_s{seed}"
    if name != "default":
        _seed_row_folder(base, folder, same_teacher="teacher" not in overrides)
    s = run_demo(DemoConfig(output=str(folder), arch="vit", seed=seed, settings=str(settings), threads=threads))
    return row_of(s, name, what, seed)


def row_of(s: Dict[str, Any], name: str, what: str, seed: int) -> Dict[str, Any]:
    pg = s["pointing"].get("methods", {})
    best = max((m for m in pg if m != "bcos"), key=lambda m: pg[m]["mean"], default=None)
    stages = {t["name"]: t for t in s["timing"]["stages"]}
    distill = f"distill_{s['main_loss']}"
    return {"row": name, "what": what, "seed": seed,
            "teacher": s["zeroshot"]["teacher"], "retention": s["retention"]["student"],
            "pointing": pg.get("bcos", {}).get("mean"), "best_baseline": best,
            "baseline": pg[best]["mean"] if best else None,
            "completeness": s["explain"]["completeness"]["max_error_over_tolerance"],
            "distill_cpu_s": stages.get(distill, {}).get("cpu_s"),
            "student_cpu_s": round(sum(stages[n]["cpu_s"] for n in (*STUDENT_STAGES, distill) if n in stages), 1),
            "teacher_cpu_s": stages.get("teacher", {}).get("cpu_s"), "threads": s["machine"]["torch_threads"]}


def table(rows: List[Dict[str, Any]]) -> str:
    """Markdown: one line per row name, means over its seeds (and the seeds' values in brackets)."""
    by: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["row"], []).append(r)
    head = ("| row | seeds | retention natural | specialized | structured | pointing (%) | best baseline (%) "
            "| completeness / tol | distil CPU min |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, rs in by.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        def cell(f, fmt="{:.2f}"):
            vals = [f(r) for r in rs]
            return fmt.format(sum(vals) / len(vals)) + " (" + " / ".join(fmt.format(v) for v in vals) + ")"
        lines.append(f"| {rs[0]['what']} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{cell(lambda r: r['retention']['natural'])} | {cell(lambda r: r['retention']['specialized'])} | "
                     f"{cell(lambda r: r['retention']['structured'])} | {cell(lambda r: 100 * r['pointing'], '{:.1f}')} | "
                     f"{cell(lambda r: 100 * r['baseline'], '{:.1f}')} | {max(r['completeness'] for r in rs):.2f} | "
                     f"{cell(lambda r: r['distill_cpu_s'] / 60, '{:.1f}')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="print the table of <out>/recipe.jsonl and stop")
    args = ap.parse_args()
    out = Path(args.out)
    jsonl = out / "recipe.jsonl"
    if args.table:
        print(table([json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]))
        return
    logging.basicConfig(level=logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.rows:
            row = run_row(out, name, seed, args.threads)
            with open(jsonl, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
