"""Running a suite: every model on every (dataset, task) entry; failures become failed rows."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bcos_clip.data.readers.registry import dataset_name
from bcos_clip.runtime.distributed import is_main_process
from bcos_clip.evaluation.output_names import RunName, is_template, result_file
from bcos_clip.evaluation.probe_rng import seeded_load
from bcos_clip.evaluation.results import first_line, make_record, write_record
from bcos_clip.evaluation.suite_files import Suite, SuiteEntry, load_groups
from bcos_clip.evaluation.tasks import EvalConfig, ModelHandle, evaluate, existing_ok, resolve_task
from bcos_clip.models import DegenerateEmbeddingError

log = logging.getLogger(__name__)


def safe_name(spec: str) -> str:
    """:func:`dataset_name`, or the spec itself when it cannot be parsed (its row then fails)."""
    try:
        return dataset_name(spec)
    except ValueError:
        return spec


def entry_group(entry: SuiteEntry, groups: Dict[str, str]) -> str:
    if entry.group:
        return entry.group
    if entry.task == "zeroshot_retrieval":
        return "retrieval"
    return groups.get(safe_name(entry.dataset), "other")


def _path(ident: Tuple[str, Optional[str], str], entry: SuiteEntry, cfg: EvalConfig) -> Path:
    model_arg, pretrained, label = ident
    return result_file(cfg.output, RunName(entry.dataset, model_arg, pretrained, label, entry.task, cfg.language))


def _failed(ident: Tuple[str, Optional[str], str], entry: SuiteEntry, cfg: EvalConfig, group: str,
            error: str) -> Dict[str, Any]:
    """Write a failed row (status "failed", empty metrics) so reports show it; a successful result of an
    earlier run at the same path is kept (a failed command never replaces what the user had)."""
    model_arg, pretrained, label = ident
    rec = make_record(dataset=entry.dataset, model=model_arg, pretrained=pretrained, label=label,
                      task=entry.task, metrics={}, language=cfg.language, status="failed", error=error,
                      group=group)
    path = _path(ident, entry, cfg)
    log.error("FAILED %s / %s / %s: %s", label, entry.dataset, entry.task, error)
    if existing_ok(path):
        log.warning("kept the earlier successful result %s (not replaced by this failure)", path)
        rec = {**rec, "kept_earlier_result": str(path)}
    elif is_main_process():
        write_record(path, rec)
    return rec


ModelLoader = Callable[[str, Optional[str]], Any]


def default_loader(cache_dir: Optional[str] = None) -> ModelLoader:
    """Models through :func:`bcos_clip.models.resolve_model` (downloads kept in ``cache_dir``)."""
    from bcos_clip.models import resolve_model

    return lambda model, pretrained: resolve_model(model, pretrained, cache_dir=cache_dir)


def _handle(spec: Any, cfg: EvalConfig, loader: ModelLoader) -> ModelHandle:
    if isinstance(spec, ModelHandle):
        return spec
    model, state = seeded_load(lambda: loader(spec.model, spec.pretrained), cfg.probe.seed)  # as CLIP_benchmark
    model = model.to(cfg.device).eval()
    return ModelHandle(model, spec.model, spec.pretrained, spec.label or "", state)


def _identity(spec: Any) -> Tuple[str, Optional[str], str]:
    if isinstance(spec, ModelHandle):
        return spec.model_arg, spec.pretrained, spec.label
    probe = ModelHandle(None, spec.model, spec.pretrained, spec.label or "")
    return probe.model_arg, probe.pretrained, probe.label


def entry_config(entry: SuiteEntry, cfg: EvalConfig, suite: Suite) -> EvalConfig:
    """``cfg`` with the entry's own dataset root, splits and language applied."""
    probe = cfg.probe
    if entry.val_split is not None or entry.val_proportion is not None:
        probe = replace(probe, val_split=entry.val_split, val_proportion=entry.val_proportion)
    return replace(cfg, dataset_root=entry.dataset_root or cfg.dataset_root or suite.dataset_root,
                   train_split=entry.train_split or cfg.train_split, language=entry.language or cfg.language,
                   probe=probe)


def resolve_entries(suite: Suite, cfg: EvalConfig) -> List[Tuple[SuiteEntry, EvalConfig]]:
    """Every entry with its config and its task decided (``auto`` as CLIP_benchmark decides it)."""
    out = []
    for e in suite.entries:
        ecfg = entry_config(e, cfg, suite)
        try:
            task = resolve_task(e.dataset, e.task, ecfg.dataset_root)
        except ValueError:
            task = e.task  # the row fails with this error when it runs
        out.append((replace(e, task=task), ecfg))
    return out


def check_distinct_outputs(entries: Sequence[Tuple[SuiteEntry, EvalConfig]], idents: Sequence[Tuple]) -> None:
    """Refuse a run in which two results would go to one file (an ``--output`` template without the
    placeholder that tells them apart): nothing would be left of the first."""
    seen: Dict[Path, str] = {}
    for ident in idents:
        for e, ecfg in entries:
            path = _path(ident, e, ecfg)
            what = f"{ident[0]} / {e.dataset} / {e.task} / {ecfg.language}"
            if path in seen:
                fix = ("add the placeholder that tells them apart ({dataset}, {model}, {pretrained}, {task}, "
                       "{language}, {label})" if is_template(ecfg.output) else "give each model its own --label")
                raise ValueError(f"--output {ecfg.output!r}: {seen[path]} and {what} would both be written "
                                 f"to {path}; {fix}")
            seen[path] = what


def run_suite(suite: Suite, cfg: EvalConfig, models: Sequence[Any] = (),
              loader: Optional[ModelLoader] = None, groups: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    """Evaluate every model (``ModelSpec`` to load, or a ready ``ModelHandle``) on every suite entry.

    A model that fails to load or an entry that fails (missing dataset, corrupt image, ...) gives a
    failed row and the suite goes on; with ``cfg.skip_existing`` successful results are kept. A model
    whose image embeddings are zero or non-finite stops the suite (DegenerateEmbeddingError). Two runs
    that would write one file are refused before any work.
    Returns the records of this run, failed rows included (status "failed"; rank 0).
    """
    models = list(models) or list(suite.models)
    if not models:
        raise ValueError(f"suite {suite.name!r}: no models (give --model or a 'models' list in the suite)")
    groups = load_groups() if groups is None else groups
    loader = loader or default_loader(cfg.model_cache_dir)
    entries = resolve_entries(suite, cfg)
    check_distinct_outputs(entries, [_identity(m) for m in models])
    records: List[Dict[str, Any]] = []
    for spec in models:
        ident = _identity(spec)
        todo = [(e, c) for e, c in entries if not (c.skip_existing and existing_ok(_path(ident, e, c)))]
        if len(todo) < len(entries):
            log.info("%s: %d results exist, skipped", ident[2], len(entries) - len(todo))
        if not todo:
            continue
        try:
            handle = _handle(spec, cfg, loader)
        except Exception as exc:  # a broken model fails its rows, the suite goes on
            records += [_failed(ident, e, c, entry_group(e, groups), f"model: {first_line(exc)}") for e, c in todo]
            continue
        for e, ecfg in todo:
            try:
                rec = evaluate(handle, e.dataset, e.task, ecfg, entry_group(e, groups))
            except DegenerateEmbeddingError:
                raise  # the model itself is unusable: every row would fail alike, stop with its one line
            except Exception as exc:  # noqa: BLE001 - a failed row names the problem
                records.append(_failed(ident, e, ecfg, entry_group(e, groups), first_line(exc)))
                continue
            if rec is not None:
                records.append(rec)
    return records
