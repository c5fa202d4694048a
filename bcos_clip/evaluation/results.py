"""Result records: one JSON file per (model, dataset, task[, language]) in CLIP_benchmark's schema, plus
what makes the number reproducible. Always strict JSON: NaN / inf are written as null (CLIP_benchmark
writes a bare ``NaN`` for an undefined acc5).

CLIP_benchmark's keys, with its values: ``dataset`` (exactly as given, ``wds/`` prefix included),
``model`` and ``pretrained`` (as given; ``""`` when there is none), ``task``, ``metrics``, ``language``
and, with ``--dump_classnames`` / ``--dump_templates``, ``classnames`` / ``templates``. ``metrics`` uses
its names: ``acc1``, ``acc5``, ``mean_per_class_recall`` (zero-shot classification),
``mean_average_precision`` (multilabel), ``image_retrieval_recall@k`` / ``text_retrieval_recall@k``,
and for linear probes ``lp_acc1``, ``lp_acc5``, ``lp_mean_per_class_recall`` with the settings
``weight_decay``, ``epochs``, ``seed``, ``fewshot_k``, ``normalized`` beside them.

bcos-clip's keys beside them: ``model_label``, ``status`` ("ok" | "failed") and ``error``, ``group``,
``dataset_root``, ``split``, ``n_samples``, ``precision``, ``device``, ``world_size``,
``classnames_digest``, ``templates_digest``, ``n_templates``, ``num_classes``, ``num_templates`` /
``num_texts``, ``model_hash``, ``context_length``, ``is_bcos``, ``probe`` (every linear-probe setting
used) and ``probe_head``, ``versions``. Records of earlier bcos-clip versions (``dataset`` without
``wds/``, linear-probe ``acc1``) and CLIP_benchmark's own files are read too.
"""
from __future__ import annotations

import json
import logging
import math
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

log = logging.getLogger(__name__)

TASK_NAMES = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe")
_VERSIONED = ("bcos_clip", "torch", "torchvision", "open_clip_torch", "webdataset", "datasets", "numpy")


def slug(text: str) -> str:
    """File-name-safe form: ``/`` -> ``-``, anything else odd -> ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text).replace("/", "-")).strip("_") or "x"


def model_label(model: str, pretrained: Optional[str] = None) -> str:
    """Short name of a model argument for files and report columns: the last path component of a
    checkpoint directory / JSON config, plus the pretrained tag (or its file stem)."""
    base = Path(str(model).rstrip("/")).name or str(model)
    base = base[:-5] if base.endswith(".json") else base
    if pretrained:
        tag = Path(str(pretrained)).stem if ("/" in str(pretrained) or "." in str(pretrained)) \
            else str(pretrained)
        base = f"{base}-{tag}"
    return slug(base)


def result_path(output_dir: Path, dataset: str, label: str, task: str, language: str = "en") -> Path:
    """``output_dir/<dataset_cleaned>__<model label>__<task>.json`` (``__<language>`` added for languages
    other than en): the file of one run in a results folder."""
    lang = "" if language == "en" else f"__{slug(language)}"
    return Path(output_dir) / f"{slug(dataset)}__{slug(label)}__{task}{lang}.json"


def sanitize(obj: Any) -> Any:
    """Replace NaN / inf floats by None, recursively; tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return sanitize(obj.item())  # numpy / torch scalars
    return obj


def package_versions() -> Dict[str, Optional[str]]:
    """Versions of the packages a number depends on (None when not installed)."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def make_record(*, dataset: str, model: str, pretrained: Optional[str], label: str, task: str,
                metrics: Dict[str, Any], language: str = "en", status: str = "ok", error: Optional[str] = None,
                **info: Any) -> Dict[str, Any]:
    """A result record (module docstring). ``info`` adds bcos-clip's fields (digests, n_samples, ...)."""
    record = {"dataset": dataset, "model": model, "pretrained": pretrained or "", "task": task,
              "metrics": metrics, "language": language, "model_label": label, "status": status}
    if error is not None:
        record["error"] = error
    record.update(info)
    record["versions"] = package_versions()
    return sanitize(record)


def write_record(path: Path, record: Dict[str, Any]) -> Path:
    """Write ``record`` as strict JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sanitize(record), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_record(path: Path) -> Optional[Dict[str, Any]]:
    """A record, or None if ``path`` is not a result file of this schema."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not {"dataset", "model", "task", "metrics"} <= set(data):
        return None
    return sanitize(data)  # CLIP_benchmark's files may hold NaN


def read_results(results_dir: Path) -> List[Dict[str, Any]]:
    """Every result record under ``results_dir`` (recursively), sorted by file path."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} not found")
    records = []
    for path in sorted(root.rglob("*.json")):
        rec = read_record(path)
        if rec is not None:
            rec.setdefault("model_label", model_label(rec["model"], rec.get("pretrained")))
            records.append(rec)
    return records


def first_line(exc: BaseException) -> str:
    """A one-line description of an exception (DataLoader worker errors carry a traceback)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    if len(lines) > 1 and re.match(r"^[\w.]+(Error|Exception|Interrupt):", text):
        return text  # already "SomeError: message" (re-raised from a worker)
    return f"{type(exc).__name__}: {text}"
