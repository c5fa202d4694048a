"""Hub-style export of a bcos_clip checkpoint: config.json + safetensors + README.md model card.

The checkpoint is validated by loading it, then its files are copied byte for byte (so `bcos_clip.load`
of the export gives exactly the same model), with the reports found beside it, the evaluation result
records (`results/`), and a model card summarising the teacher, the bcosify settings, the training run
(`train_config.json`, `metrics.jsonl`) and the benchmark results.

Where the run files are looked for: the checkpoint directory and up to two parents (a training run
writes OUTPUT/metrics.jsonl and OUTPUT/checkpoints/step_N/{config.json, model.safetensors,
train_config.json}); result records in `results/` folders there, and in any `--results` path given.
Only regular files inside their folder are read: a link in the checkpoint that leads out of it is an
error (nothing from elsewhere is published), one in the folders around it is skipped.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from bcos_clip.apps.export.model_card import render_model_card
from bcos_clip.evaluation.results import read_record
from bcos_clip.models.checkpoint import (CONFIG_NAME, TEACHER_VISUAL_NAME, WEIGHTS_NAME, load,
                                         read_config)
from bcos_clip.models.hf_tokenizer import BUNDLED_DIR
from bcos_clip.runtime.contained import file_inside, folder_inside, regular_file_inside
from bcos_clip.runtime.runfiles import METRICS, RESULTS_DIR, TRAIN_CONFIG, read_jsonl

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME, TEACHER_VISUAL_NAME)
REPORT_FILES = ("conversion_report.json", "import_report.json", TRAIN_CONFIG)
SEARCH_DEPTH = 2  # the checkpoint directory and this many parents


def _search_dirs(directory: Path) -> List[Path]:
    d = directory.resolve()
    return [d] + list(d.parents)[:SEARCH_DEPTH]


def find_first(directory: Path, name: str) -> Optional[Path]:
    """`name` in the checkpoint directory or its nearest parent that has it as a regular file inside that
    folder (a link leading out of it is skipped)."""
    for d in _search_dirs(directory):
        if os.path.lexists(d / name):
            found = regular_file_inside(d, name)
            if found is not None:
                return found
            log.warning("export: skipping %s (a link out of %s, or not a regular file)", d / name, d)
    return None


def summarize_metrics(path: Path) -> Optional[Dict[str, Any]]:
    """Records, last step, last loss and last in-training zero-shot top-1 of a metrics.jsonl."""
    records = read_jsonl(path)
    if not records:
        return None
    losses = [r["loss"] for r in records if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    zeroshot = [r["zeroshot_top1"] for r in records if isinstance(r.get("zeroshot_top1"), (int, float))]
    return {"records": len(records), "last_step": max(int(r.get("step", 0)) for r in records),
            "last_loss": losses[-1] if losses else None, "last_zeroshot_top1": zeroshot[-1] if zeroshot else None}


def _result_files(paths: Iterable[Path]) -> List[Path]:
    """JSON files given, or found in the folders given (only regular files inside the folder)."""
    files: List[Path] = []
    for p in paths:
        if not p.is_dir():
            files.append(p.resolve())
            continue
        for f in sorted(p.rglob("*.json")):
            inside = regular_file_inside(p, f)
            if inside is None:
                log.warning("export: skipping %s (a link out of %s)", f, p)
            else:
                files.append(inside)
    return list(dict.fromkeys(files))


def read_result_records(paths: Iterable[Path]) -> List[Dict[str, Any]]:
    """Result records (``evaluation.results.read_record``) among `paths` (files or folders); others skipped."""
    records = []
    for path in _result_files(paths):
        rec = read_record(path)
        if rec is not None and isinstance(rec["metrics"], dict):
            records.append({**rec, "_file": path})
    return records


def checkpoint_files(src: Path) -> Dict[str, Path]:
    """{name: resolved path} of the checkpoint's files to copy; each must be a regular file inside `src`
    (links that stay inside are followed), else OutsideFolderError: nothing from elsewhere is exported."""
    files = {name: file_inside(src, name, "checkpoint")
             for name in CHECKPOINT_FILES + REPORT_FILES if os.path.lexists(src / name)}
    if os.path.lexists(src / BUNDLED_DIR):
        folder = folder_inside(src, BUNDLED_DIR, "checkpoint")
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                files[f"{BUNDLED_DIR}/{f.relative_to(folder)}"] = file_inside(src, f, "checkpoint")
    return files


def _copy_checkpoint(files: Dict[str, Path], out: Path) -> None:
    for name, path in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / name)


def export(directory: PathLike, output: PathLike, results: Sequence[PathLike] = (),
           license: Optional[str] = None, title: Optional[str] = None) -> Path:
    """Write the hub-style folder of checkpoint `directory` to `output`; returns `output`.

    results: extra result files / folders to summarise (besides `results/` beside the checkpoint).
    """
    src, out = Path(directory), Path(output)
    files = checkpoint_files(src)  # regular files inside the checkpoint only
    config = read_config(src)
    load(src)  # the export must be loadable: a broken checkpoint fails here, with the key diff
    if out.resolve() == src.resolve():
        raise ValueError(f"export: --output {out} is the checkpoint directory itself; choose a new folder")
    for p in results:
        if not Path(p).exists():
            raise FileNotFoundError(f"export: results path {p} not found")
    out.mkdir(parents=True, exist_ok=True)
    _copy_checkpoint(files, out)
    train_path = find_first(src, TRAIN_CONFIG)
    train_cfg = json.loads(train_path.read_text()) if train_path else None
    if train_path and not (out / TRAIN_CONFIG).is_file():
        shutil.copyfile(train_path, out / TRAIN_CONFIG)
    metrics_path = find_first(src, METRICS)
    metrics = summarize_metrics(metrics_path) if metrics_path else None
    search = [d / RESULTS_DIR for d in _search_dirs(src) if (d / RESULTS_DIR).is_dir()] + [Path(p) for p in results]
    records = read_result_records(search)
    if records:
        (out / RESULTS_DIR).mkdir(exist_ok=True)
        for rec in records:
            shutil.copyfile(rec["_file"], out / RESULTS_DIR / rec["_file"].name)
    teacher = Path(str(config.get("source", {}).get("name"))).name
    name = title or f"B-cos CLIP {teacher} ({src.resolve().name})"
    card = render_model_card(config, name, train_cfg, metrics, records, license)
    (out / "README.md").write_text(card, encoding="utf-8")
    log.info("exported %s -> %s (%d result records%s)", src, out, len(records),
             ", training log" if metrics else "")
    return out
