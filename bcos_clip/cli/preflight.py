"""Optional dependencies of every subcommand, checked before the command does any work.

``NEEDS[command](args)`` lists the ``(extra or package, purpose)`` pairs this command line needs;
``check(command, args)`` (called by ``bcos_clip.cli.main`` before the command runs) raises
``MissingExtra`` with one line naming the first missing one and its pip command, so a missing package
stops a command in its first second instead of after minutes of work. Commands that degrade instead
list nothing: ``report`` and ``demo`` draw their charts with Pillow without matplotlib (the ``plot``
extra), ``bench`` uses Triton kernels only where it is installed.

Which extras exist and what they provide: ``bcos_clip.runtime.extras``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from bcos_clip.runtime.extras import require

Need = Tuple[str, str]  # (extra or package name, what of the command line needs it; "": the command)


def _flat(groups: Optional[Sequence]) -> List[str]:
    """Values of an ``append`` + ``nargs`` flag (a list of lists), or of a plain flag, as one list."""
    out: List[str] = []
    for g in groups or []:
        out.extend(g if isinstance(g, (list, tuple)) else [g])
    return [str(v) for v in out if v is not None]


def model_needs(models: Iterable[Optional[str]], flag: str = "--model") -> List[Need]:
    """``hf`` for every model that is a transformers CLIP folder (config.json of model_type "clip")."""
    for model in models:
        if model and (Path(model) / "config.json").is_file():
            from bcos_clip.models.hf_clip import is_hf_clip_dir

            if is_hf_clip_dir(model):
                return [("hf", f"{flag} {model} (a transformers CLIP folder)")]
    return []


def dataset_needs(specs: Iterable[str]) -> List[Need]:
    """``hf`` for the first ``hf:<path>`` dataset."""
    for spec in specs:
        if str(spec).strip().startswith("hf:"):
            return [("hf", f"dataset {spec}")]
    return []


def _eval_datasets(args: argparse.Namespace) -> List[str]:
    """The datasets of an eval command line (files of names and suites expanded); [] when they cannot be
    read (the command itself then reports that, naming the file)."""
    from bcos_clip.evaluation.run_plan import expand_datasets
    from bcos_clip.evaluation.suite_files import load_suite

    try:
        if _arg(args, "suite"):
            return [e.dataset for e in load_suite(args.suite).entries]
        return expand_datasets(_flat(_arg(args, "dataset")))
    except (OSError, ValueError, KeyError):
        return []


def _arg(args: argparse.Namespace, name: str) -> Optional[str]:
    """A flag's value, None when not given (``train`` suppresses the defaults of flags not given)."""
    return getattr(args, name, None)


def _eval(args: argparse.Namespace) -> List[Need]:
    pairs = [p.split(",")[0] for p in _flat(_arg(args, "pretrained_model"))]
    return dataset_needs(_eval_datasets(args)) + model_needs(_flat(_arg(args, "model")) + pairs)



def _nothing(args: argparse.Namespace) -> List[Need]:
    return []


NEEDS: Dict[str, Callable[[argparse.Namespace], List[Need]]] = {
    "bcosify": lambda a: model_needs([_arg(a, "model")]),
    "eval": _eval,
    "report": _nothing,  # charts: matplotlib when installed, else Pillow
    "train": lambda a: model_needs([_arg(a, "model")]),  # --report-to backends: train.reporters checks them
    "serve": lambda a: [("serve", "")] + model_needs([_arg(a, "teacher")], "--teacher"),
    "import-official": lambda a: model_needs([_arg(a, "teacher")], "--teacher"),
    "export": _nothing,  # reads and writes bcos_clip checkpoints and model cards
    "explain": lambda a: model_needs([_arg(a, "model")]),
    "localize": lambda a: model_needs([_arg(a, "model")]),
    "bench": _nothing,  # Triton kernels only where Triton is installed (CUDA)
    "demo": _nothing,  # figures: matplotlib when installed, else Pillow; the README's setup suffices
}


def check(command: str, args: argparse.Namespace) -> None:
    """Raise ``MissingExtra`` (one line) when ``command`` with ``args`` needs a package that is missing."""
    for name, purpose in NEEDS[command](args):
        require(name, purpose)
