"""Where each result goes: CLIP_benchmark's ``--output`` file-name template, or a results folder.

``--output`` is a *template* (a file name, CLIP_benchmark's meaning) when it contains a ``{...}``
placeholder or ends in ``.json``; otherwise it is a *folder* (bcos-clip's own layout, one file per run
named ``<dataset>__<model label>__<task>.json``, ``__<language>`` added for languages other than en).

Template placeholders, filled as CLIP_benchmark fills them (its default template is
:data:`DEFAULT_TEMPLATE`):

- ``{dataset}``: the dataset name without ``wds/``, ``/`` -> ``_`` (``wds/vtab/cifar10`` -> ``vtab_cifar10``);
- ``{model}``: the ``--model`` value (``/`` -> ``_``: a path would otherwise name folders that do not exist);
- ``{pretrained}``: the file name of a ``--pretrained`` file, else the tag as given;
- ``{pretrained_full_path}``: a ``--pretrained`` file's path with ``/`` -> ``_``, else the tag;
- ``{task}``, ``{language}``; and, a bcos-clip extension, ``{label}`` (the model's report label).

Example::

    result_file("{dataset}_{pretrained}_{model}_{language}_{task}.json",
                RunName("wds/vtab/cifar10", "ViT-B-32", "openai", "ViT-B-32-openai", "linear_probe", "en"))
    # -> vtab_cifar10_openai_ViT-B-32_en_linear_probe.json
"""
from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from bcos_clip.data.readers.registry import dataset_name, parse_spec
from bcos_clip.evaluation.results import result_path

DEFAULT_TEMPLATE = "{dataset}_{pretrained}_{model}_{language}_{task}.json"
PLACEHOLDERS = ("dataset", "model", "pretrained", "pretrained_full_path", "task", "language", "label")


@dataclass(frozen=True)
class RunName:
    """The identity of one result: dataset spec as given, model and pretrained as given, the model's
    report label, the task (resolved, never ``auto``) and the language."""

    dataset: str
    model: str
    pretrained: Optional[str]
    label: str
    task: str
    language: str = "en"


def is_template(output: str) -> bool:
    """True when ``--output`` names result files (a template or one ``.json`` file), not a folder."""
    text = str(output)
    if "{" in text:
        return True
    return text.endswith(".json") and not Path(text).is_dir()


def _short_name(spec: str) -> str:
    """The reader's dataset name, or the spec itself when it names no known reader (its row fails)."""
    try:
        return dataset_name(spec)
    except ValueError:
        return spec


def _dataset_field(spec: str) -> str:
    """``{dataset}``: a wds name without ``wds/`` (as given otherwise), an ``hf:`` / ``folder:`` dataset's
    folder name; ``/`` -> ``_``."""
    if spec.startswith("wds/"):
        return spec[len("wds/"):].replace("/", "_")
    try:
        kind, _ = parse_spec(spec)
    except ValueError:
        kind = "?"
    return (spec if kind == "wds" else _short_name(spec)).replace("/", "_")


def template_fields(run: RunName) -> Dict[str, str]:
    """The placeholder values of ``run`` (see the module docstring)."""
    pre = run.pretrained or ""
    is_file = bool(pre) and os.path.isfile(pre)
    return {"dataset": _dataset_field(run.dataset), "model": run.model.replace("/", "_"),
            "pretrained": os.path.basename(pre) if is_file else pre,
            "pretrained_full_path": pre.replace("/", "_") if is_file else pre,
            "task": run.task, "language": run.language, "label": run.label}


def check_template(template: str) -> None:
    """Refuse unknown or positional placeholders in ``--output`` (one line naming them)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"--output {template!r}: not a valid template ({exc})") from None
    bad = [f for f in fields if f.split(".")[0].split("[")[0] not in PLACEHOLDERS]
    if bad:
        raise ValueError(f"--output {template!r}: unknown placeholder {{{bad[0]}}} "
                         f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")


def result_file(output: str, run: RunName) -> Path:
    """The result JSON of ``run`` under ``--output`` (a template or a folder)."""
    if is_template(output):
        check_template(output)
        return Path(str(output).format(**template_fields(run)))
    return result_path(Path(output), _short_name(run.dataset), run.label, run.task, run.language)


def probe_head_file(output: str, run: RunName) -> Path:
    """Where a linear-probe head is saved: ``<folder>/probes/<result name>.safetensors``, or next to a
    templated result file as ``<result name>.probe.safetensors``."""
    path = result_file(output, run)
    if is_template(output):
        return path.with_name(path.stem + ".probe.safetensors")
    return Path(output) / "probes" / f"{path.stem}.safetensors"
