"""CLIP_benchmark's ``--custom_classname_file`` and ``--custom_template_file``: JSON objects keyed by
dataset name that replace a dataset's class names / zero-shot templates.

Lookup, as CLIP_benchmark's: the dataset exactly as given (``wds/vtab/cifar10``), then without its
first component for ``wds/``, ``vtab/`` and ``tfds/`` names (``vtab/cifar10``); templates then fall
back to the ``imagenet1k`` entry. A template entry is a list of templates with ``{c}`` (or ``{}``), or
a mapping ``{classname: [prompts]}`` of class-specific prompts (CuPL). A dataset the file does not
cover is an error (theirs stops on an assertion).

Example file (``--custom_template_file prompts.json``)::

    {"wds/vtab/cifar10": ["a photo of a {c}.", "a blurry photo of a {c}."],
     "imagenet1k": ["itap of a {c}."]}
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

PREFIXED = ("wds/", "vtab/", "tfds/")
TEMPLATE_FALLBACK = "imagenet1k"


@dataclasses.dataclass(frozen=True)
class PromptTable:
    """A loaded custom classname or template file: its path (for messages) and its JSON object."""

    path: str
    entries: Dict[str, Any]


def load_prompt_table(path: str, flag: str) -> PromptTable:
    """Read a custom classname / template JSON file (an object keyed by dataset name)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{flag} {path}: file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{flag} {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {path}: expected a JSON object keyed by dataset name, got {type(data).__name__}")
    return PromptTable(str(path), data)


def lookup_keys(spec: str) -> List[str]:
    """The keys tried for dataset ``spec``, in order."""
    keys = [spec]
    if spec.startswith(PREFIXED):
        keys.append(spec.split("/", 1)[1])
    return keys


def _lookup(table: PromptTable, keys: List[str], flag: str) -> Any:
    for key in keys:
        if key in table.entries:
            return table.entries[key]
    raise ValueError(f"{flag} {table.path}: no entry for {' or '.join(map(repr, keys))}")


def _check_classnames(value: Any, where: str) -> List[str]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise ValueError(f"{where}: class names must be a non-empty list of strings")
    return value


def _check_templates(value: Any, where: str) -> Any:
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return value
    if isinstance(value, dict) and value and all(
            isinstance(v, list) and v and all(isinstance(p, str) for p in v) for v in value.values()):
        return value
    raise ValueError(f"{where}: templates must be a non-empty list of strings or a mapping "
                     "{classname: [prompts]}")


def with_custom_prompts(dataset: Any, spec: str, classnames: Optional[PromptTable],
                        templates: Optional[PromptTable]) -> Any:
    """``dataset`` (a frozen dataclass reader) with its class names / templates replaced from the
    tables that are given; retrieval datasets are returned unchanged (as CLIP_benchmark, which only
    reads these files for classification and linear probes)."""
    if dataset.kind == "retrieval" or (classnames is None and templates is None):
        return dataset
    changes: Dict[str, Any] = {}
    keys = lookup_keys(spec)
    if classnames is not None:
        flag = "--custom_classname_file"
        value = _lookup(classnames, keys, flag)
        changes["classnames"] = _check_classnames(value, f"{flag} {classnames.path} [{keys[0]!r}]")
        if dataset.classnames is not None and len(value) != len(dataset.classnames):
            raise ValueError(f"{flag} {classnames.path}: {len(value)} class names for {spec!r}, "
                             f"which has {len(dataset.classnames)} classes")
    if templates is not None:
        flag = "--custom_template_file"
        value = _lookup(templates, keys + [TEMPLATE_FALLBACK], flag)
        changes["templates"] = _check_templates(value, f"{flag} {templates.path}")
    return dataclasses.replace(dataset, **changes)
