"""Running a suite: every model on every (dataset, task) entry; failures become failed rows."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bcos_clip.data.readers.registry import dataset_name
from bcos_clip.runtime.distributed import is_main_process
from bcos_clip.evaluation.results import first_line, make_record, result_path, write_record
from bcos_clip.evaluation.suite_files import Suite, SuiteEntry, load_groups
from bcos_clip.evaluation.tasks import EvalConfig, ModelHandle, evaluate, existing_ok
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


def _failed(ident: Tuple[str, Optional[str], str], entry: SuiteEntry, cfg: EvalConfig, group: str,
            error: str) -> Dict[str, Any]:
    """Write a failed row (status "failed", empty metrics) so reports show it; a successful result of an
    earlier run at the same path is kept (a failed command never replaces what the user had)."""
    model_arg, pretrained, label = ident
    name = safe_name(entry.dataset)
    rec = make_record(dataset=name, model=model_arg, pretrained=pretrained, label=label,
                      task=entry.task, metrics={}, status="failed", error=error, group=group,
                      dataset_spec=entry.dataset)
    path = result_path(Path(cfg.output), name, label, entry.task)
    log.error("FAILED %s / %s / %s: %s", label, name, entry.task, error)
    if existing_ok(path):
        log.warning("kept the earlier successful result %s (not replaced by this failure)", path)
        rec = {**rec, "kept_earlier_result": str(path)}
    elif is_main_process():
        write_record(path, rec)
    return rec


ModelLoader = Callable[[str, Optional[str]], Any]


def _default_loader(model: str, pretrained: Optional[str]) -> Any:
    from bcos_clip.models import resolve_model

    return resolve_model(model, pretrained)


def _handle(spec: Any, cfg: EvalConfig, loader: ModelLoader) -> ModelHandle:
    if isinstance(spec, ModelHandle):
        return spec
    model = loader(spec.model, spec.pretrained)
    model = model.to(cfg.device).eval()
    return ModelHandle(model, spec.model, spec.pretrained, spec.label or "")


def _identity(spec: Any) -> Tuple[str, Optional[str], str]:
    if isinstance(spec, ModelHandle):
        return spec.model_arg, spec.pretrained, spec.label
    probe = ModelHandle(None, spec.model, spec.pretrained, spec.label or "")
    return probe.model_arg, probe.pretrained, probe.label


def run_suite(suite: Suite, cfg: EvalConfig, models: Sequence[Any] = (),
              loader: Optional[ModelLoader] = None, groups: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    """Evaluate every model (``ModelSpec`` to load, or a ready ``ModelHandle``) on every suite entry.

    A model that fails to load or an entry that fails (missing dataset, corrupt image, ...) gives a
    failed row and the suite goes on; with ``cfg.skip_existing`` successful results are kept. A model
    whose image embeddings are zero or non-finite stops the suite (DegenerateEmbeddingError).
    Returns the records of this run, failed rows included (status "failed"; rank 0).
    """
    models = list(models) or list(suite.models)
    if not models:
        raise ValueError(f"suite {suite.name!r}: no models (give --model or a 'models' list in the suite)")
    groups = load_groups() if groups is None else groups
    loader = loader or _default_loader
    records: List[Dict[str, Any]] = []
    for spec in models:
        ident = _identity(spec)
        todo = [e for e in suite.entries if not (cfg.skip_existing and existing_ok(
            result_path(Path(cfg.output), safe_name(e.dataset), ident[2], e.task)))]
        if len(todo) < len(suite.entries):
            log.info("%s: %d results exist, skipped", ident[2], len(suite.entries) - len(todo))
        if not todo:
            continue
        try:
            handle = _handle(spec, cfg, loader)
        except Exception as exc:  # a broken model fails its rows, the suite goes on
            records += [_failed(ident, e, cfg, entry_group(e, groups), f"model: {first_line(exc)}")
                        for e in todo]
            continue
        for e in todo:
            entry_cfg = replace(cfg, dataset_root=e.dataset_root or cfg.dataset_root or suite.dataset_root)
            try:
                rec = evaluate(handle, e.dataset, e.task, entry_cfg, entry_group(e, groups))
            except DegenerateEmbeddingError:
                raise  # the model itself is unusable: every row would fail alike, stop with its one line
            except Exception as exc:  # noqa: BLE001 - a failed row names the problem
                records.append(_failed(ident, e, cfg, entry_group(e, groups), first_line(exc)))
                continue
            if rec is not None:
                records.append(rec)
    return records
