"""bcos_clip: B-cosify the image tower of open_clip CLIP models, distil, benchmark and explain it.

The public names below are imported on first use (module ``__getattr__``), so ``import bcos_clip.nn``
or ``import bcos_clip.runtime`` loads neither open_clip nor the models or explanations.

``bcos_clip.explain`` and ``bcos_clip.bcosify`` are the public *functions*, as they always were; their
subpackages of the same name are imported by their dotted names (``from bcos_clip.explain import ...``).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, List

__version__ = "0.1.0"

# public name -> the subpackage that defines it
_HOMES = {
    "BcosCLIP": "models", "PlainCLIP": "models", "bcosify": "models", "load": "models", "load_clip": "models",
    "recalibrate_batchnorm": "models", "resolve_model": "models", "save": "models",
    "Explanation": "explain", "explain": "explain", "explanation_mode": "nn",
}
# public functions named like a subpackage: importing the subpackage must not replace the function
_SHADOWED = ("bcosify", "explain")
__all__ = sorted(_HOMES) + ["__version__"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bcos_clip' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bcos_clip.{home}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_HOMES))


class _Package(types.ModuleType):
    """This module, keeping ``bcosify`` / ``explain`` bound to the public functions when the import
    system binds a freshly imported subpackage of the same name to its parent."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return  # the subpackage stays reachable through sys.modules and its dotted name
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
