"""Run the same ``clip_benchmark eval`` command lines through CLIP_benchmark itself and through
``bcos-clip eval``, then compare the result files: names, keys, values, metrics side by side.

CLIP_benchmark runs in its own environment (``--cb-python``, e.g. a venv with clip_benchmark==1.6.2)
through ``scripts/clip_benchmark_cpu.py`` (its linear probe patched to run on a CPU; the demo teacher's
open_clip config registered; bcos_clip checkpoints loadable). Models and datasets come from a
``bcos-clip demo`` folder (or the explicit flags)::

    bcos-clip demo --quick --out /tmp/demo
    python scripts/compare_clip_benchmark.py --demo /tmp/demo --cb-python /tmp/cb_venv/bin/python \\
        --work /tmp/cmp --report /tmp/cmp/report.md

Both sides run in their own folder holding the same relative names (``teacher.json`` and its weights,
``student`` (a checkpoint), ``models.txt``, ``datasets.txt``), so CLIP_benchmark's default output
template names the same files on both sides. Checks: every file CLIP_benchmark wrote exists on ours;
its keys are a subset of ours with equal values (``dataset``, ``model``, ``pretrained``, ``task``,
``language``); the ``metrics`` keys are equal; every metric is equal exactly (an undefined acc5: their
NaN, our null), linear probes included: bcos-clip replays the global-RNG draws of CLIP_benchmark's run
(``bcos_clip/evaluation/probe_rng.py``). A difference is reported in test samples. Exit code 0 when
every check passes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
WRAPPER = HERE / "clip_benchmark_cpu.py"
ZERO_SHOT = ("wds/shapes_natural", "wds/shapes_sketch", "wds/shapes_count", "wds/shapes_position")
PROBE = ("wds/shapes_natural", "wds/shapes_count")
RETRIEVAL = "wds/shapes_retrieval"


@dataclass(frozen=True)
class Command:
    """One command line, run on both sides; metrics must match to the last bit. ``folder``: created
    first on both sides (CLIP_benchmark does not create the folders of its output template)."""

    name: str
    argv: Tuple[str, ...]
    folder: Optional[str] = None


def _to(folder: str) -> Tuple[str, ...]:
    return ("--output", folder + "/{dataset}_{pretrained}_{model}_{language}_{task}.json")


def commands(root: str, quick: bool) -> List[Command]:
    """The command lines: zero-shot (``--task auto``), retrieval, and linear probes: features
    extracted (each side's feature cache empty), the same again with the features cached (nothing
    drawn for the loaders), few-shot with a validation split, and the weight-decay search."""
    common = ("--pretrained_model", "models.txt", "--dataset_root", f"{root}/{{dataset}}", "--no_amp",
              "--num_workers", "1")
    probe_sets = PROBE[:1] if quick else PROBE
    out = [Command("zero-shot, --task auto", ("eval", "--dataset", "datasets.txt", "--task", "auto") + common),
           Command("retrieval", ("eval", "--dataset", RETRIEVAL, "--task", "zeroshot_retrieval",
                                 "--recall_k", "1", "5", "10") + common)]
    probe = ("eval", "--dataset", *probe_sets, "--task", "linear_probe") + common
    out.append(Command("linear probe", probe))
    out.append(Command("linear probe, features cached (the same again)", probe + _to("cached"), folder="cached"))
    out.append(Command("linear probe, --val_split test --fewshot_k 4", probe + (
        "--val_split", "test", "--fewshot_k", "4", "--feature_root", "features_val") + _to("fewshot"),
        folder="fewshot"))
    if not quick:
        out.append(Command("linear probe, --val_split test (weight-decay search, refit on train+val)", probe + (
            "--val_split", "test", "--feature_root", "features_val2") + _to("val"), folder="val"))
    return out


def prepare(side: Path, teacher_cfg: Path, teacher_weights: Path, student: Path, datasets: List[str]) -> None:
    """The side's folder: links to the models under fixed relative names, the two list files."""
    side.mkdir(parents=True, exist_ok=True)
    for name, target in (("teacher.json", teacher_cfg), (teacher_weights.name, teacher_weights), ("student", student)):
        link = side / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    (side / "models.txt").write_text(f"teacher.json,{teacher_weights.name}\nstudent,\n")
    (side / "datasets.txt").write_text("".join(d + "\n" for d in datasets))


def run_side(cmd: Command, side: Path, argv: List[str], env: Dict[str, str]) -> float:
    if cmd.folder:
        (side / cmd.folder).mkdir(exist_ok=True)
    log = side / f"log_{len(list(side.glob('log_*')))}.txt"
    start = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(argv, cwd=side, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{' '.join(argv[:3])}... failed in {side} (exit {rc}); see {log}")
    return time.perf_counter() - start


def _undefined(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(a: Any, b: Any) -> bool:
    """Equal, or both undefined (CLIP_benchmark's NaN, our null)."""
    return (_undefined(a) and _undefined(b)) or a == b


def compare_file(cmd: Command, theirs: Path, ours: Path, name: str) -> Tuple[List[str], List[dict]]:
    """(problems, rows) of one result file (``name``: its path relative to the side's folder)."""
    t, o = json.loads(theirs.read_text()), json.loads(ours.read_text())
    problems = [f"{name}: key {k!r} missing" for k in t if k not in o]
    problems += [f"{name}: {k} {o.get(k)!r} != {t[k]!r}" for k in t if k != "metrics" and k in o and o[k] != t[k]]
    tm, om = t.get("metrics") or {}, o.get("metrics") or {}
    if set(tm) != set(om):
        problems.append(f"{name}: metrics keys {sorted(om)} != {sorted(tm)}")
    n = o.get("n_samples") or 0
    rows = []
    for k, tv in tm.items():
        ov = om.get(k)
        diff = None if not all(isinstance(v, (int, float)) for v in (tv, ov)) or isinstance(tv, bool) else ov - tv
        samples = None if diff is None or not n or k not in ("lp_acc1", "lp_acc5", "acc1", "acc5") else diff * n
        rows.append({"command": cmd.name, "file": name, "metric": k, "theirs": tv, "ours": ov,
                     "diff": diff, "diff_samples": samples, "n_test": n})
        if not _same(tv, ov):
            problems.append(f"{name}: {k} ours {ov!r} != theirs {tv!r}")
    return problems, rows


def compare(cmd: Command, theirs: Path, ours: Path, before: set) -> Tuple[List[str], List[dict]]:
    files = sorted(p for p in theirs.rglob("*.json") if p.is_file() and not p.is_symlink()
                   and not p.relative_to(theirs).parts[0].startswith("features") and p not in before)
    if not files:
        return [f"{cmd.name}: CLIP_benchmark wrote no result file"], []
    problems, rows = [], []
    for f in files:
        mine = ours / f.relative_to(theirs)
        if not mine.is_file():
            problems.append(f"{cmd.name}: {mine} missing (CLIP_benchmark wrote {f.name})")
            continue
        p, r = compare_file(cmd, f, mine, str(f.relative_to(theirs)))
        problems += p
        rows += r
    return problems, rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def markdown(rows: List[dict], times: Dict[str, Tuple[float, float]], problems: List[str]) -> str:
    lines = ["| command | result file | metric | CLIP_benchmark | bcos-clip | diff (samples) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["metric"] in ("epochs", "seed", "fewshot_k", "normalized"):
            continue
        d = "0" if r["diff"] == 0 else (_fmt(r["diff"]) + (f" ({r['diff_samples']:+.0f})" if r["diff_samples"] else ""))
        lines.append(f"| {r['command']} | {r['file']} | {r['metric']} | {_fmt(r['theirs'])} | {_fmt(r['ours'])} | "
                     f"{d if r['diff'] is not None else '–'} |")
    lines += ["", "| command | CLIP_benchmark s | bcos-clip s |", "|---|---|---|"]
    lines += [f"| {k} | {a:.1f} | {b:.1f} |" for k, (a, b) in times.items()]
    lines += ["", f"{len(problems)} problem(s)" + (":" if problems else "")] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", help="a bcos-clip demo folder (world/wds, teacher/teacher_rn.*, students/text_kd)")
    p.add_argument("--wds-root", help="folder of the wds/<name> datasets (default DEMO/world/wds)")
    p.add_argument("--teacher-config", help="teacher open_clip JSON (default DEMO/teacher/teacher_rn.json)")
    p.add_argument("--teacher-weights", help="teacher weights (default DEMO/teacher/teacher_rn.pt)")
    p.add_argument("--student", help="bcos_clip checkpoint (default DEMO/students/text_kd/checkpoints/latest)")
    p.add_argument("--cb-python", default=os.environ.get("CLIP_BENCHMARK_PYTHON", sys.executable),
                   help="python of the environment with clip_benchmark (default $CLIP_BENCHMARK_PYTHON)")
    p.add_argument("--work", default=None, help="work folder (default: a new temporary one); must be new or empty")
    p.add_argument("--quick", action="store_true", help="fewer datasets and probe variants")
    p.add_argument("--report", default=None, help="write the markdown table here (also printed)")
    p.add_argument("--json", default=None, help="write every compared value here")
    return p.parse_args(argv)


def resolve_paths(args: argparse.Namespace) -> Tuple[Path, Path, Path, Path]:
    demo = Path(args.demo) if args.demo else None

    def pick(value: Optional[str], rel: str) -> Optional[Path]:
        return Path(value) if value else (demo / rel if demo else None)

    paths = (pick(args.wds_root, "world/wds"), pick(args.teacher_config, "teacher/teacher_rn.json"),
             pick(args.teacher_weights, "teacher/teacher_rn.pt"),
             pick(args.student, "students/text_kd/checkpoints/latest"))
    missing = [str(p) for p in paths if p is None or not p.exists()]
    if missing:
        raise SystemExit(f"compare_clip_benchmark: not found: {missing} (give --demo or the paths)")
    return paths  # type: ignore[return-value]


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    wds, teacher_cfg, teacher_w, student = resolve_paths(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cmp_clip_benchmark_"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"compare_clip_benchmark: --work {work} is not empty")
    sets = list(ZERO_SHOT[::2] if args.quick else ZERO_SHOT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    theirs, ours = work / "clip_benchmark", work / "bcos_clip"
    for side in (theirs, ours):
        prepare(side, teacher_cfg, teacher_w, student, sets)
    problems, rows, times = [], [], {}
    for cmd in commands(str(wds.resolve()), args.quick):
        before = set(theirs.rglob("*.json"))
        cb = [args.cb_python, "-W", "ignore", str(WRAPPER), "--register", "teacher.json=teacher.json"]
        cb += ["--", *cmd.argv]
        t_cb = run_side(cmd, theirs, cb, env)
        t_ours = run_side(cmd, ours, [sys.executable, "-m", "bcos_clip.cli", "--log-level", "WARNING", *cmd.argv], env)
        times[cmd.name] = (t_cb, t_ours)
        p, r = compare(cmd, theirs, ours, before)
        problems += p
        rows += r
    text = markdown(rows, times, problems)
    print(text)
    if args.report:
        Path(args.report).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "times": times, "problems": problems}, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
