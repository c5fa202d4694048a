"""The demo's verdicts and ``report.md``: targets (issue 8) checked on the numbers of ``summary.json``,
and the markdown a user reads, with relative links to the figures.

Targets: teacher zero-shot >= 85 % on the natural task and >= 2x chance on every task; the student keeps
>= 90 % of the teacher's accuracy above chance in every group, (student - chance) / (teacher - chance);
the student's pointing-game score beats every post-hoc baseline on the teacher.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

TEACHER_NATURAL_MIN = 0.85
TEACHER_CHANCE_FACTOR = 2.0
RETENTION_MIN = 0.9


def retention(student: Optional[float], teacher: Optional[float], chance: float) -> Optional[float]:
    """(student - chance) / (teacher - chance); None when a value is missing or the teacher is at chance."""
    if student is None or teacher is None or teacher - chance <= 1e-9:
        return None
    return (student - chance) / (teacher - chance)


def group_chance(chance: Mapping[str, float], groups: Mapping[str, str]) -> Dict[str, float]:
    """Chance level of each group: the mean chance of its datasets (as the group means average)."""
    out: Dict[str, List[float]] = {}
    for ds, g in groups.items():
        if ds in chance:
            out.setdefault(g, []).append(chance[ds])
    return {g: sum(v) / len(v) for g, v in out.items()}


def check_targets(s: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Rows {"target", "value", "goal", "met"} from a demo summary (see ``run_demo``)."""
    chance, zs = s["chance"], s["zeroshot"]
    teacher = zs["teacher"]
    rows = [{"target": "teacher zero-shot, shapes_natural", "value": f"{100 * teacher['shapes_natural']:.1f} %",
             "goal": f">= {100 * TEACHER_NATURAL_MIN:.0f} %", "met": teacher["shapes_natural"] >= TEACHER_NATURAL_MIN}]
    for ds in chance:
        factor = teacher[ds] / chance[ds]
        rows.append({"target": f"teacher zero-shot / chance, {ds}", "value": f"{factor:.2f}x "
                     f"({100 * teacher[ds]:.1f} % vs {100 * chance[ds]:.1f} %)",
                     "goal": f">= {TEACHER_CHANCE_FACTOR:.0f}x", "met": factor >= TEACHER_CHANCE_FACTOR})
    for group, value in s["retention"]["student"].items():
        rows.append({"target": f"student retention above chance, {group}",
                     "value": "–" if value is None else f"{value:.3f}", "goal": f">= {RETENTION_MIN}",
                     "met": value is not None and value >= RETENTION_MIN})
    return rows + _pointing_target(s)


def _pointing_target(s: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Student vs the best post-hoc baseline; settings' ``pointing.target_margin`` (a share, e.g. 0.05 =
    5 points) is the lead the goal asks for (0: any lead)."""
    margin = float(((s.get("settings") or {}).get("pointing") or {}).get("target_margin") or 0.0)
    goal = "student > every baseline" if margin <= 0 else f"student >= best baseline + {100 * margin:g} points"
    target = "pointing game: student vs best post-hoc baseline on the teacher"
    pg = s.get("pointing", {}).get("methods", {})
    if s.get("pointing", {}).get("skipped"):
        return [{"target": target, "value": "not played: " + s["pointing"]["skipped"], "goal": goal, "met": False}]
    best = max((m for m in pg if m != "bcos"), key=lambda m: pg[m]["mean"], default=None)
    if not pg or best is None:
        return []
    student, other = pg["bcos"]["mean"], pg[best]["mean"]
    met = student > other if margin <= 0 else student >= other + margin - 1e-12
    return [{"target": target, "value": f"{100 * student:.1f} % vs {100 * other:.1f} % ({best})", "goal": goal,
             "met": met}]


def duration(seconds: float) -> str:
    """"42 s" under two minutes, else "3.4 min"."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _num(v: Optional[float], fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _table(head: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _intro(s: Dict[str, Any]) -> List[str]:
    c, t = s["config"], s["timing"]
    return [
        "# bcos_clip demo: B-cosified CLIP on the shapes world", "",
        "Everything below was produced offline on a CPU by `bcos-clip demo"
        + (" --quick" if c["quick"] else "") + f" --arch {c['arch']} --seed {c['seed']}`: a procedurally "
        "drawn world of coloured shapes with captions, a tiny CLIP teacher trained on it contrastively, "
        "its image tower B-cosified and distilled back to the teacher, both evaluated on tasks that mirror "
        "CLIP_benchmark's natural / specialized / structured groups, and the student's explanations shown and "
        "scored. Settings: `configs/demo.yaml` (or `--settings FILE`); every number is also in `summary.json`.",
        "",
        f"Machine: {s['machine']['cpus']} CPU cores (torch threads: {s['machine']['torch_threads']}), "
        f"torch {s['machine']['torch']}. This run took **{duration(t['wall_s'])}** wall, "
        f"{duration(t['cpu_s'])} CPU" + (f"; it reused {sum(x['cached'] for x in t['stages'])} stages of an "
                                             "earlier run (their times, in the last table, are from that run)"
                                             if any(x["cached"] for x in t["stages"]) else "") + ".", ""]


def _targets(s: Dict[str, Any]) -> List[str]:
    rows = [[r["target"], r["value"], r["goal"], "yes" if r["met"] else "**no**"] for r in s["targets"]]
    return ["## Targets", "", "Retention is (student − chance) / (teacher − chance) on the zero-shot group means "
            "(structured: counting and position averaged); the pointing game is section 5."
            + (" This is a `--quick` smoke run (small world, few steps): the goals are set for the full demo, "
               "so misses here are expected." if s["config"]["quick"] else ""), ""] \
        + _table(["target", "value", "goal", "met"], rows) + [""]


def _world(s: Dict[str, Any]) -> List[str]:
    w = s["world"]
    share = w.get("collage_share") or 0.0
    collages = (f" ({100 * share:.0f} % of them 2 x 2 collages of small one-object scenes, so that the models "
                f"know the pointing game's grids)") if share else ""
    return ["## 1. The shapes world", "",
            f"{w['n_train']:,} training images with captions{collages} (img2dataset-style shards in `world/train/`) and "
            f"CLIP_benchmark `wds/` folders for {', '.join(f'`{t}` ({g})' for t, g in w['groups'].items())}, "
            f"{w['n_eval_per_class']} images per class and split. Training samples:", "",
            f"![training samples]({s['files']['world_samples']})", ""]


def _models(s: Dict[str, Any]) -> List[str]:
    t, st = s["teacher"], s["students"][s.get("main_loss", "text_kd")]
    zs, chance, groups = s["zeroshot"], s["chance"], s["world"]["groups"]
    refit = "; BatchNorm statistics refitted on 320 training images" if s["config"]["arch"] == "rn" else ""
    rows = [[ds, groups[ds], _pct(chance[ds]), _pct(zs["teacher"][ds]), _pct(zs["bcosified"].get(ds)),
             _pct(zs["student"][ds]), _num(retention(zs["student"][ds], zs["teacher"][ds], chance[ds]), ".2f")]
            for ds in chance]
    return ["## 2. Teacher, B-cosified tower and distilled student", "",
            f"Teacher: tiny open_clip CLIP (`{s['config']['arch']}`), {t['steps']} contrastive steps at batch "
            f"{t['batch_size']} (final loss {_num(t.get('final_loss'))}). `bcosify` turns its image tower into a "
            f"B-cos tower (B = 2, no biases{refit}), which no longer agrees with the text tower (column "
            f"*B-cosified*); "
            f"distillation with the default `{st['loss']}` loss ({st['steps']} steps, loss "
            f"{_num(st.get('first_loss'))} -> {_num(st.get('final_loss'))}) brings it back.", "",
            "Zero-shot top-1 (%) on each task; retention = (student - chance) / (teacher - chance):", ""] \
        + _table(["task", "group", "chance", "teacher", "B-cosified", "student", "retention"], rows) + [""]


def _eval(s: Dict[str, Any]) -> List[str]:
    body = s["eval_report"]["markdown"].replace(s["eval_report"]["results_dir"], "eval/results").splitlines()
    body = [("#" + line) if line.startswith("## ") else line for line in body[1:]]  # drop its title
    return ["## 3. Benchmark tables (zero-shot, linear probe, retrieval)", "",
            "From `bcos_clip.evaluation.build_report` over `eval/results/` (also as `eval/report.csv`):", ""] \
        + body + ["", f"![group means]({s['eval_report']['plot']})", ""]


def _explain(s: Dict[str, Any]) -> List[str]:
    e = s["explain"]
    comp = e["completeness"]
    return ["## 4. Explanations of the B-cos student", "",
            "Each row is a scene, each column a prompt (templates: "
            + ", ".join(f"`{t}`" for t in (e["templates"] or ["a photo of {}."])) + "). The B-cos colour "
            "explanation shows, in the image's own colours, the pixels whose contribution to the cosine is "
            "positive; the cosine is under each panel. One forward and one batched backward explain all prompts.",
            "", f"![colour explanations]({e['files']['colour']})", "",
            "The same contributions as a heat map (red: raises the cosine, blue: lowers it):", "",
            f"![contribution maps]({e['files']['heatmap']})", "",
            "A prompt that names an object of the scene should light up that object and little else; "
            "prompts for absent objects get lower cosines. Scenes: "
            + "; ".join(f"{i + 1}: {n} (highest cosine: *{p}*)" for i, (n, p) in
                        enumerate(zip(e["scenes"], e["top_prompt"]))) + ".", "",
            f"Completeness (sum of contributions + bias = cosine, checked for every panel): largest error "
            f"{comp['max_abs_error']:.2e}, {comp['max_error_over_tolerance']:.3f} of the tolerance "
            "1e-6 + 1e-4 |cos|.", "", "Each scene with its highest-cosine prompt: image, colour explanation, "
            "contribution overlay:", ""] + [f"![scene {i + 1}]({p})" for i, p in enumerate(e["files"]["pairs"])] + [""]


def _paired(d: Optional[Dict[str, float]]) -> str:
    if not d:
        return "–"
    return f"{100 * d['mean']:+.1f} ± {100 * d['sem']:.1f} (student better on {100 * d['wins']:.0f} % of grids)"


def _pointing(s: Dict[str, Any]) -> List[str]:
    p = s["pointing"]
    if p.get("skipped"):
        return ["## 5. Grid pointing game", "", f"Not played: {p['skipped']}.", ""]
    any_m = next(iter(p["methods"].values()))
    rows = [[m["label"], _pct(m["mean"]), _pct(m["std"]), _pct(m["median"]), _paired(m.get("student_minus"))]
            for m in p["methods"].values()]
    return ["## 5. Grid pointing game", "",
            f"{any_m['n_grids']} grids of {any_m['grid']}x{any_m['grid']} `{p['dataset']}` test images of distinct "
            f"classes that both the student and the teacher classify correctly and confidently, shown at "
            f"{any_m['image_size']} px. For each cell's class prompt, the score is the share of positive "
            f"(box-smoothed, k = {any_m['smooth']}) attribution inside that cell; chance is "
            f"{100 * any_m['chance']:.0f} %. The B-cos student explains itself; the post-hoc methods explain "
            "the plain teacher on the same grids.", "", f"![pointing game]({p['files']['chart']})", ""] \
        + _table(["method", "mean (%)", "std", "median", "student − method (same grids)"], rows) \
        + ["", "The first grid, one row per method (yellow: the cell of the prompt's class):", "",
           f"![pointing examples]({p['files']['examples']})", ""]


def _compare(s: Dict[str, Any]) -> List[str]:
    c = s["compare"]
    groups = list(c["chance"])
    head = ["model", "loss", "steps", "train CPU min"] + [f"{g} (%)" for g in groups] + \
        [f"retention {g}" for g in groups] + ["pointing (%)"]
    rows = []
    for r in c["rows"]:
        rows.append([r["label"], r.get("loss") or "–", str(r.get("steps") or "–"),
                     _num(r.get("train_cpu_min"), ".1f")]
                    + [_pct(r["groups"].get(g)) for g in groups]
                    + [_num(r["retention"].get(g), ".2f") if r.get("retention") else "–" for g in groups]
                    + [_pct(r.get("pointing"))])
    figures = [f"![loss comparison]({c['files']['chart']})", ""] if "chart" in c.get("files", {}) else []
    figures += [f"![training losses]({c['files']['curves']})", ""]
    if len(s["students"]) < 2:
        return ["## 6. Distillation", "",
                f"The student's training (`{s['main_loss']}` loss); zero-shot group means in %, pointing as in "
                "section 5. `bcos-clip demo --compare-losses` also distils a student with each of the other "
                "losses (`siglip`, `cosine`) on the same world and teacher and compares them here.", ""] \
            + _table(head, rows) + [""] + figures
    return ["## 6. Three distillation losses on the same world", "",
            "`text_kd` (default): KL between the softmaxes of student and teacher cosines to the batch's "
            "captions (temperature T); `siglip`: the paper's sigmoid loss between student and teacher image "
            "embeddings; `cosine`: 1 - cos(student, teacher). Same teacher, data and optimiser"
            + (f"; the comparison students ran {c['steps']} steps" if c.get("steps") else "") + ". "
            "Zero-shot group means in %; *pointing*: the B-cos grid pointing game of each student "
            + ("on one set of grids that every student and the teacher classify confidently (section 5 uses "
               "the grids the main student and the teacher agree on, so its number can differ)."
               if not s.get("pointing_losses", {}).get("skipped") else
               f"(not played: {s['pointing_losses']['skipped']})."), ""] \
        + _table(head, rows) + [""] + figures


def _timing(s: Dict[str, Any]) -> List[str]:
    rows = [[t["name"], f"{t['wall_s']:.1f}", f"{t['cpu_s']:.1f}", "reused" if t["cached"] else "ran"]
            for t in s["timing"]["stages"]]
    return ["## Stage times", ""] + _table(["stage", "wall (s)", "CPU (s)", "this run"], rows) + [
        "", "Every number above is also in `summary.json`; a second run reuses the world, the teacher and every "
        "stage whose inputs are unchanged (markers in `stages/`).", ""]


def render_report(s: Dict[str, Any]) -> str:
    """The markdown of ``report.md`` from a demo summary."""
    parts = [_intro(s), _targets(s), _world(s), _models(s), _eval(s), _explain(s), _pointing(s), _compare(s),
             _timing(s)]
    return "\n".join(line for part in parts for line in part)


def write_report(s: Dict[str, Any], out_dir: Path) -> Path:
    path = Path(out_dir) / "report.md"
    path.write_text(render_report(s), encoding="utf-8")
    return path
