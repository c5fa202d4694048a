"""One evaluation: (model, dataset, task) -> metrics -> a result JSON file.

``TASKS[name](handle, dataset, config) -> TaskOutput | None`` (None on non-zero ranks).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from bcos_clip.evaluation.classifier import class_prompts, tokenizer_context_length
from bcos_clip.data.readers.registry import dataset_name, open_dataset
from bcos_clip.runtime.distributed import rank_world
from bcos_clip.evaluation.features import LoaderSettings, cached_split_features
from bcos_clip.runtime.hashing import json_digest, model_digest, text_tower_digest
from bcos_clip.evaluation.linear_probe import ProbeConfig, fit_and_evaluate, save_probe
from bcos_clip.runtime.precision import effective_precision
from bcos_clip.evaluation.results import make_record, model_label, read_record, result_path, write_record
from bcos_clip.evaluation.zeroshot import TaskOutput, zeroshot_classification, zeroshot_retrieval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation run needs besides the model and the dataset spec."""

    output: str = "eval_results"
    dataset_root: Optional[str] = None
    cache_dir: Optional[str] = None  # default: <output>/cache
    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    split: str = "test"
    train_split: str = "train"
    recall_k: Tuple[int, ...] = (1, 5, 10)
    skip_existing: bool = False
    save_probe: bool = True
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output) / "cache"

    def loader(self) -> LoaderSettings:
        return LoaderSettings(self.batch_size, self.workers, self.device, self.precision)


@dataclass
class ModelHandle:
    """A model in the common interface (``encode_image`` on [0, 1] images, ``encode_text``,
    ``tokenizer``, ``preprocess``) with its command-line identity and lazily computed digests."""

    model: Any
    model_arg: str
    pretrained: Optional[str] = None
    label: str = ""
    _hashes: Dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.label = self.label or model_label(self.model_arg, self.pretrained)

    def model_hash(self) -> str:
        if "model" not in self._hashes:
            self._hashes["model"] = model_digest(self.model)
        return self._hashes["model"]

    def text_hash(self) -> str:
        if "text" not in self._hashes:
            self._hashes["text"] = text_tower_digest(self.model)
        return self._hashes["text"]


def _zs_classification(h: ModelHandle, ds: Any, cfg: EvalConfig) -> Optional[TaskOutput]:
    return zeroshot_classification(h.model, ds, cfg.loader(), cfg.cache_path, cfg.split, h.text_hash())


def _zs_retrieval(h: ModelHandle, ds: Any, cfg: EvalConfig) -> Optional[TaskOutput]:
    return zeroshot_retrieval(h.model, ds, cfg.loader(), cfg.split, cfg.recall_k)


def _probe_features(h: ModelHandle, ds: Any, split: str, cfg: EvalConfig) -> Optional[Tuple[torch.Tensor, Any]]:
    return cached_split_features(h.model, ds, split, cfg.loader(), cfg.cache_path, h.model_hash())


def _linear_probe(h: ModelHandle, ds: Any, cfg: EvalConfig) -> Optional[TaskOutput]:
    if ds.kind != "classification":
        raise ValueError(f"dataset {ds.name!r} is {ds.kind}: the linear probe needs single-label classes")
    probe_cfg = replace(cfg.probe, device=cfg.device)
    for split in (cfg.train_split, probe_cfg.val_split):
        if split and not ds.has_split(split):
            raise ValueError(f"dataset {ds.name!r} has no {split!r} split for the linear probe")
    train, test = _probe_features(h, ds, cfg.train_split, cfg), _probe_features(h, ds, cfg.split, cfg)
    val = _probe_features(h, ds, probe_cfg.val_split, cfg) if probe_cfg.val_split else None
    if train is None or test is None:
        return None  # not rank 0
    probe, metrics, used = fit_and_evaluate(train, test, len(ds.classnames), probe_cfg, val)
    extra: Dict[str, Any] = {"probe": used}
    if cfg.save_probe:
        stem = result_path(Path(cfg.output), ds.name, h.label, "linear_probe").stem
        head = Path(cfg.output) / "probes" / f"{stem}.safetensors"
        extra["probe_head"] = str(save_probe(probe, head, ds.classnames, used))
    return TaskOutput(metrics, int(test[0].shape[0]), extra)


TASKS: Dict[str, Callable[[ModelHandle, Any, EvalConfig], Optional[TaskOutput]]] = {
    "zeroshot_classification": _zs_classification,
    "zeroshot_retrieval": _zs_retrieval,
    "linear_probe": _linear_probe,
}


def check_task(task: str) -> str:
    """Accept ``zeroshot_classification`` and ``zeroshot-classification`` spellings."""
    name = task.replace("-", "_")
    if name not in TASKS:
        raise ValueError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    return name


def _repro_info(h: ModelHandle, ds: Any, cfg: EvalConfig, out: TaskOutput) -> Dict[str, Any]:
    classnames = ds.classnames or []
    templates = ds.templates if ds.classnames else []
    return {
        "dataset_root": str(ds.root), "split": cfg.split, "n_samples": out.n_samples,
        "precision": effective_precision(cfg.precision, torch.device(cfg.device)),
        "device": torch.device(cfg.device).type, "world_size": rank_world()[1],
        "classnames_digest": json_digest(classnames) if classnames else None,
        "templates_digest": json_digest(class_prompts(["{c}"], templates)) if templates else None,
        "n_templates": len(templates), "model_hash": h.model_hash(),
        "context_length": tokenizer_context_length(h.model.tokenizer),
        "is_bcos": bool(getattr(h.model, "is_bcos", False)), **out.extra,
    }


def existing_ok(path: Path) -> bool:
    """True when ``path`` holds a successful result (failed rows are re-run)."""
    rec = read_record(path)
    return rec is not None and rec.get("status", "ok") == "ok"


def evaluate(handle: ModelHandle, spec: str, task: str, cfg: EvalConfig,
             group: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Run one task and write its JSON (rank 0). Returns the record (None on other ranks, or the
    existing record when ``cfg.skip_existing`` finds one). Errors propagate."""
    task = check_task(task)
    name = dataset_name(spec)
    path = result_path(Path(cfg.output), name, handle.label, task)
    if cfg.skip_existing and existing_ok(path):
        log.info("skip existing %s", path)
        return read_record(path)
    ds = open_dataset(spec, cfg.dataset_root)
    log.info("%s on %s (%s): %s", handle.label, name, ds.kind, task)
    out = TASKS[task](handle, ds, cfg)
    if out is None:
        return None
    record = make_record(dataset=name, model=handle.model_arg, pretrained=handle.pretrained,
                         label=handle.label, task=task, metrics=out.metrics, group=group,
                         dataset_spec=spec, **_repro_info(handle, ds, cfg, out))
    write_record(path, record)
    log.info("%s: %s", path.name, out.metrics)
    return record
