"""One evaluation: (model, dataset, task) -> metrics -> a result JSON file (CLIP_benchmark's schema).

``TASKS[name](handle, dataset, config, spec) -> TaskOutput | None`` (None on non-zero ranks; ``spec``
is the dataset as given, for output names). ``auto`` picks
the task per dataset as CLIP_benchmark does (:func:`auto_task`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from bcos_clip.evaluation.classifier import templates_key, tokenizer_context_length
from bcos_clip.evaluation.custom_prompts import PromptTable, with_custom_prompts
from bcos_clip.data.readers.registry import dataset_name, open_dataset, parse_spec
from bcos_clip.runtime.distributed import rank_world
from bcos_clip.evaluation.features import LoaderSettings, cached_split_features, feature_cache_path
from bcos_clip.runtime.hashing import json_digest, model_digest, text_tower_digest
from bcos_clip.evaluation.linear_probe import ProbeConfig, save_probe
from bcos_clip.evaluation.output_names import RunName, is_template, probe_head_file, result_file
from bcos_clip.runtime.precision import effective_precision
from bcos_clip.evaluation.probe import run_probe
from bcos_clip.evaluation.probe_rng import ClipBenchmarkRng, loader_draws
from bcos_clip.evaluation.results import make_record, model_label, read_record, write_record
from bcos_clip.evaluation.zeroshot import ClassifierFiles, TaskOutput, zeroshot_classification, zeroshot_retrieval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation run needs besides the model and the dataset spec.

    ``output``: a results folder, or CLIP_benchmark's file-name template (:mod:`output_names`).
    Caches: zero-shot classifiers under ``cache_dir/classifiers`` (default ``OUTPUT/cache`` for a
    folder, none for a template), linear-probe features under ``feature_root`` (default
    ``cache_dir/features``, ``OUTPUT/cache/features`` for a folder, ``features`` as CLIP_benchmark for
    a template). ``save_clf`` may hold output placeholders; ``load_clfs`` replaces the text tower's
    classifier by the mean of those files; ``model_cache_dir`` keeps downloaded weights.
    """

    output: str = "eval_results"
    dataset_root: Optional[str] = None
    cache_dir: Optional[str] = None
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
    language: str = "en"
    feature_root: Optional[str] = None
    custom_classnames: Optional[PromptTable] = None
    custom_templates: Optional[PromptTable] = None
    dump_classnames: bool = False
    dump_templates: bool = False
    save_clf: Optional[str] = None
    load_clfs: Tuple[str, ...] = ()
    model_cache_dir: Optional[str] = None

    @property
    def cache_path(self) -> Optional[Path]:
        """Zero-shot classifier cache folder (None: no cache)."""
        if self.cache_dir:
            return Path(self.cache_dir)
        return None if is_template(self.output) else Path(self.output) / "cache"

    @property
    def feature_path(self) -> Path:
        """Linear-probe feature cache folder."""
        if self.feature_root:
            return Path(self.feature_root)
        if self.cache_path is not None:
            return self.cache_path / "features"
        return Path("features")

    def loader(self) -> LoaderSettings:
        return LoaderSettings(self.batch_size, self.workers, self.device, self.precision)


@dataclass
class ModelHandle:
    """A model in the common interface (``encode_image`` on [0, 1] images, ``encode_text``,
    ``tokenizer``, ``preprocess``) with its command-line identity and lazily computed digests.
    ``rng_after_load``: the CPU RNG state after loading it right after ``torch.manual_seed(seed)``
    (:func:`probe_rng.seeded_load`), for the clip_benchmark probe's permutation; None: unknown."""

    model: Any
    model_arg: str
    pretrained: Optional[str] = None
    label: str = ""
    rng_after_load: Optional[torch.Tensor] = field(default=None, repr=False)
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


def _run_name(h: "ModelHandle", spec: str, task: str, cfg: EvalConfig) -> RunName:
    return RunName(spec, h.model_arg, h.pretrained, h.label, task, cfg.language)


def _zs_classification(h: ModelHandle, ds: Any, cfg: EvalConfig, spec: str) -> Optional[TaskOutput]:
    files = ClassifierFiles(None, tuple(cfg.load_clfs))
    if cfg.save_clf:
        save = cfg.save_clf
        if "{" in save:
            save = str(result_file(save, _run_name(h, spec, "zeroshot_classification", cfg)))
        files = ClassifierFiles(Path(save), tuple(cfg.load_clfs))
    return zeroshot_classification(h.model, ds, cfg.loader(), cfg.cache_path, cfg.split, h.text_hash(), files)


def _zs_retrieval(h: ModelHandle, ds: Any, cfg: EvalConfig, spec: str) -> Optional[TaskOutput]:
    return zeroshot_retrieval(h.model, ds, cfg.loader(), cfg.split, cfg.recall_k)


def _probe_features(h: ModelHandle, ds: Any, split: str, cfg: EvalConfig) -> Optional[Tuple[torch.Tensor, Any]]:
    return cached_split_features(h.model, ds, split, cfg.loader(), cfg.feature_path, h.model_hash())


def _linear_probe(h: ModelHandle, ds: Any, cfg: EvalConfig, spec: str) -> Optional[TaskOutput]:
    if ds.kind != "classification":
        raise ValueError(f"dataset {ds.name!r} is {ds.kind}: the linear probe needs single-label classes")
    probe_cfg = replace(cfg.probe, device=cfg.device, precision=cfg.precision).resolved(cfg.batch_size)
    for split in (cfg.train_split, probe_cfg.val_split):
        if split and not ds.has_split(split):
            raise ValueError(f"dataset {ds.name!r} has no {split!r} split for the linear probe")
    computed = not feature_cache_path(cfg.feature_path, h.model_hash(), ds, cfg.train_split, cfg.precision).is_file()
    train, test = _probe_features(h, ds, cfg.train_split, cfg), _probe_features(h, ds, cfg.split, cfg)
    val = _probe_features(h, ds, probe_cfg.val_split, cfg) if probe_cfg.val_split else None
    if train is None or test is None:
        return None  # not rank 0
    has_val = bool(probe_cfg.val_split or probe_cfg.val_proportion)
    rng = ClipBenchmarkRng(probe_cfg.seed, h.rng_after_load, loader_draws(computed, has_val))
    head, metrics, used = run_probe(train, test, len(ds.classnames), probe_cfg, val, rng)
    extra: Dict[str, Any] = {"probe": used}
    if cfg.save_probe:
        path = probe_head_file(cfg.output, _run_name(h, spec, "linear_probe", cfg))
        extra["probe_head"] = str(save_probe(head, path, ds.classnames, used))
    return TaskOutput(metrics, int(test[0].shape[0]), extra)


TASKS: Dict[str, Callable[[ModelHandle, Any, EvalConfig, str], Optional[TaskOutput]]] = {
    "zeroshot_classification": _zs_classification,
    "zeroshot_retrieval": _zs_retrieval,
    "linear_probe": _linear_probe,
}


def check_task(task: str) -> str:
    """Accept ``zeroshot_classification`` and ``zeroshot-classification`` spellings, and ``auto``."""
    name = task.replace("-", "_")
    if name not in TASKS and name != "auto":
        raise ValueError(f"--task {task!r}: choose one of {', '.join(TASKS)} or auto")
    return name


# CLIP_benchmark's datasets whose default task is retrieval (its get_dataset_default_task), and the
# prefixes / names of its image-caption selection sets (a task bcos-clip does not run).
RETRIEVAL_DATASETS = frozenset({"flickr30k", "flickr8k", "mscoco_captions", "multilingual_mscoco_captions",
                                "flickr30k-200", "crossmodal3600", "xtd10", "xtd200"})
CAPTION_SELECTION = ("sugar_crepe", "winoground")


def auto_task(spec: str, dataset_root: Optional[str]) -> str:
    """``--task auto``: CLIP_benchmark's choice from the dataset name (without ``wds/``): retrieval for
    its caption datasets, zero-shot classification otherwise. Where theirs would then fail, on a
    folder whose ``dataset_type.txt`` (or first sample) says retrieval, bcos-clip picks retrieval."""
    kind, rest = parse_spec(spec)
    name = rest if kind == "wds" else dataset_name(spec)
    if name in RETRIEVAL_DATASETS:
        return "zeroshot_retrieval"
    if name.startswith(CAPTION_SELECTION):
        raise ValueError(f"dataset {spec!r}: its CLIP_benchmark task is image_caption_selection, "
                         "which bcos-clip does not run")
    try:
        found = open_dataset(spec, dataset_root).kind
    except (OSError, ValueError):
        found = "classification"  # the row fails with the reader's own error when it runs
    return "zeroshot_retrieval" if found == "retrieval" else "zeroshot_classification"


def resolve_task(spec: str, task: str, dataset_root: Optional[str]) -> str:
    """``task`` checked, with ``auto`` decided for ``spec``."""
    task = check_task(task)
    return auto_task(spec, dataset_root) if task == "auto" else task


def _repro_info(h: ModelHandle, ds: Any, cfg: EvalConfig, out: TaskOutput) -> Dict[str, Any]:
    classnames = ds.classnames or []
    templates = ds.templates if ds.classnames else []
    return {
        "dataset_root": str(ds.root), "split": cfg.split, "n_samples": out.n_samples,
        "precision": effective_precision(cfg.precision, torch.device(cfg.device)),
        "device": torch.device(cfg.device).type, "world_size": rank_world()[1],
        "classnames_digest": json_digest(classnames) if classnames else None,
        "templates_digest": json_digest(templates_key(templates)) if templates else None,
        "n_templates": len(templates), "model_hash": h.model_hash(),
        "context_length": tokenizer_context_length(h.model.tokenizer),
        "is_bcos": bool(getattr(h.model, "is_bcos", False)), **out.extra,
    }


def _dumps(ds: Any, cfg: EvalConfig) -> Dict[str, Any]:
    """``classnames`` / ``templates`` of the record, as CLIP_benchmark's ``--dump_*`` flags add them."""
    out: Dict[str, Any] = {}
    if cfg.dump_classnames and ds.classnames:
        out["classnames"] = list(ds.classnames)
    if cfg.dump_templates and ds.classnames and ds.templates:
        out["templates"] = dict(ds.templates) if isinstance(ds.templates, dict) else list(ds.templates)
    return out


def existing_ok(path: Path) -> bool:
    """True when ``path`` holds a successful result (failed rows are re-run)."""
    rec = read_record(path)
    return rec is not None and rec.get("status", "ok") == "ok"


def run_path(handle: ModelHandle, spec: str, task: str, cfg: EvalConfig) -> Path:
    """The result file of ``handle`` on ``spec`` / ``task`` (resolved) under ``cfg.output``."""
    return result_file(cfg.output, _run_name(handle, spec, task, cfg))


def evaluate(handle: ModelHandle, spec: str, task: str, cfg: EvalConfig,
             group: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Run one task (``auto`` allowed) and write its JSON (rank 0). Returns the record (None on other
    ranks, or the existing record when ``cfg.skip_existing`` finds one). Errors propagate."""
    task = resolve_task(spec, task, cfg.dataset_root)
    path = run_path(handle, spec, task, cfg)
    if cfg.skip_existing and existing_ok(path):
        log.info("skip existing %s", path)
        return read_record(path)
    ds = open_dataset(spec, cfg.dataset_root)
    if task != "zeroshot_retrieval":
        ds = with_custom_prompts(ds, spec, cfg.custom_classnames, cfg.custom_templates)
    log.info("%s on %s (%s): %s [%s]", handle.label, spec, ds.kind, task, cfg.language)
    out = TASKS[task](handle, ds, cfg, spec)
    if out is None:
        return None
    record = make_record(dataset=spec, model=handle.model_arg, pretrained=handle.pretrained,
                         label=handle.label, task=task, metrics=out.metrics, language=cfg.language,
                         group=group, **_repro_info(handle, ds, cfg, out))
    record.update(_dumps(ds, cfg))
    write_record(path, record)
    log.info("%s: %s", path, out.metrics)
    return record
