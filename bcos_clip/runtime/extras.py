"""Optional dependencies: which modules each extra of ``pyproject.toml`` provides, and the check a command
runs before it starts work.

``pip install -e .`` installs what every command needs to run at all (torch, open_clip, webdataset,
safetensors, Pillow, ...); the extras add features:

- ``plot`` (matplotlib): nicer charts; without it ``report`` and ``demo`` draw their charts with Pillow;
- ``hf`` (transformers, datasets): ``hf:`` benchmark datasets and transformers CLIP folders as models;
- ``serve`` (fastapi, uvicorn, python-multipart): ``bcos-clip serve``;
- ``wandb``: ``bcos-clip train --report-to wandb`` (``train.reporters`` checks its backends itself).

The check only looks the modules up (``importlib.util.find_spec``: no import, a few ms),
so a missing package stops a command in its first second, before any model, data or training.

Example::

    require("hf", "dataset hf:/data/pets")
    # MissingExtra: dataset hf:/data/pets needs the 'hf' extra (transformers, datasets are not
    #               installed): pip install 'bcos_clip[hf]'
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List, Tuple

# extra (pyproject.toml [project.optional-dependencies]) -> the modules it provides
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "plot": ("matplotlib",),
    "hf": ("transformers", "datasets"),
    "serve": ("fastapi", "uvicorn", "multipart"),
    "wandb": ("wandb",),
}


# modules whose pip distribution has another name (for the message)
DISTRIBUTION_NAMES: Dict[str, str] = {"multipart": "python-multipart"}


class MissingExtra(ImportError):
    """An optional dependency a command needs is not installed; the message is the one line to show."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (looked up, not imported; a ``sys.modules[name] = None`` entry,
    as tests use to hide a package, counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


def modules_of(name: str) -> Tuple[str, ...]:
    """The modules of extra ``name``; KeyError naming the known ones."""
    if name not in EXTRAS:
        raise KeyError(f"unknown extra {name!r} (extras: {', '.join(EXTRAS)})")
    return EXTRAS[name]


def missing(name: str) -> List[str]:
    """The modules of extra ``name`` that are not installed ([] = all there)."""
    return [m for m in modules_of(name) if not installed(m)]


def available(name: str) -> bool:
    """Whether every module of extra ``name`` is installed."""
    return not missing(name)


def install_hint(name: str) -> str:
    """The pip command that installs extra ``name``."""
    modules_of(name)
    return f"pip install 'bcos_clip[{name}]'"


def require(name: str, purpose: str = "") -> None:
    """Raise :class:`MissingExtra` (one line: what needs it, what is missing, the pip command) unless every
    module of extra ``name`` is installed. ``purpose``: what needs it (``"dataset hf:/data/x"``;
    "" when the caller names itself, as the CLI's ``bcos-clip serve: error: ...`` does)."""
    absent = missing(name)
    if absent:
        verb = "is" if len(absent) == 1 else "are"
        names = ", ".join(DISTRIBUTION_NAMES.get(m, m) for m in absent)
        who = f"{purpose} " if purpose else ""
        raise MissingExtra(f"{who}needs the '{name}' extra ({names} {verb} not installed): {install_hint(name)}")


__all__ = ["DISTRIBUTION_NAMES", "EXTRAS", "MissingExtra", "available", "install_hint", "installed", "missing",
           "modules_of", "require"]
