"""CLIP_benchmark's run lists: which datasets and which (model, pretrained) pairs a command line means.

As ``clip_benchmark eval`` reads them:

- ``--dataset A B``: several names after one flag; a value that is an existing file is a list of
  dataset names, one a line (blank lines and ``#`` comments skipped, a bcos-clip extension);
- ``--model M1 M2 --pretrained P1 P2``: every model with every pretrained tag (the product), default
  ``ViT-B-32-quickgelu`` / ``laion400m_e32`` (a model that is a path has no default tag: bcos_clip
  checkpoints carry their weights); ``--pretrained_model M,P ...`` instead gives the pairs
  themselves (a value that is an existing file holds one ``model,pretrained`` a line) and then
  ``--model`` / ``--pretrained`` are ignored;
- per-dataset options (``--train_split``, ``--val_split``, ``--val_proportion``): one value for every
  dataset, or one value per dataset.

bcos-clip's older spelling, ``--model A --pretrained P --model B --pretrained Q`` (one value per
flag, repeated), still pairs them in order: A with P, B with Q.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

DEFAULT_MODEL = "ViT-B-32-quickgelu"
DEFAULT_PRETRAINED = "laion400m_e32"
# CLIP_benchmark's named collections of its own (non-wds) datasets: not expanded here.
DATASET_COLLECTIONS = ("vtab", "vtab+", "imagenet_robustness", "retrieval")

Pair = Tuple[str, Optional[str]]


def read_name_file(path: str) -> List[str]:
    """Stripped, non-empty lines of a list file, ``#`` comment lines skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the list ({exc})") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _listed(value: str, flag: str, what: str) -> Optional[List[str]]:
    """The lines of ``value`` when it is a list file (one listing nothing is an error), else None."""
    if not os.path.isfile(value):
        return None
    lines = read_name_file(value)
    if not lines:
        raise ValueError(f"{flag} {value}: the file lists no {what}")
    return lines


def expand_datasets(values: Sequence[str]) -> List[str]:
    """Dataset specs from ``--dataset`` values: names as given, list files expanded in place."""
    out: List[str] = []
    for value in values:
        if value in DATASET_COLLECTIONS and not os.path.isfile(value):
            raise ValueError(f"--dataset {value}: CLIP_benchmark's collection of its own (non-wds) datasets is "
                             "not expanded by bcos-clip; list the wds/<name> datasets, or a file of them")
        out.extend(_listed(value, "--dataset", "datasets") or [value])
    return out


def _pair(text: str, where: str) -> Pair:
    parts = text.split(",")
    if len(parts) != 2 or not parts[0].strip():
        raise ValueError(f"{where}: expected 'model,pretrained', got {text!r}")
    return parts[0].strip(), parts[1].strip()


def expand_pretrained_model(values: Sequence[str]) -> List[Pair]:
    """(model, pretrained) pairs from ``--pretrained_model`` values (``M,P`` or a file of such lines)."""
    out: List[Pair] = []
    for value in values:
        lines = _listed(value, "--pretrained_model", "models")
        if lines:
            out.extend(_pair(ln, f"--pretrained_model {value}") for ln in lines)
        else:
            out.append(_pair(value, "--pretrained_model"))
    return out


def combine_models(models: Sequence[Sequence[str]], pretrained: Sequence[Sequence[str]]) -> List[Pair]:
    """(model, pretrained) pairs of ``--model`` / ``--pretrained`` (each a list per occurrence of the
    flag): bcos-clip's repeated single values pair in order, everything else is CLIP_benchmark's product.

    Without ``--pretrained`` a model *name* takes CLIP_benchmark's default tag (``laion400m_e32``), while
    a model that is a path (a bcos_clip checkpoint, a JSON config, a transformers folder) has none.
    """
    flat_m = [m for group in models for m in group] or [DEFAULT_MODEL]
    flat_p = [p for group in pretrained for p in group]
    if not flat_p:
        return [(m, None if os.path.exists(m) else DEFAULT_PRETRAINED) for m in flat_m]
    zipped = (len(models) > 1 and len(models) == len(pretrained)
              and all(len(g) == 1 for g in models) and all(len(g) == 1 for g in pretrained))
    if zipped:
        return list(zip(flat_m, flat_p))
    return [(m, p) for m in flat_m for p in flat_p]


def per_dataset(values: Optional[Sequence[Any]], n: int, flag: str) -> List[Any]:
    """One value for each of ``n`` datasets: ``values`` of length n, or one value repeated (None: all None)."""
    if not values:
        return [None] * n
    if len(values) == n:
        return list(values)
    if len(values) == 1:
        return [values[0]] * n
    raise ValueError(f"{flag}: {len(values)} values for {n} datasets (give one, or one per dataset)")
