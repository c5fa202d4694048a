"""The one YAML reader (run configs, demo settings, evaluation suites), with YAML 1.2 numbers.

PyYAML follows YAML 1.1, where ``5e-4`` (no dot) is a *string*: a config saying ``lr: 5e-4`` would
reach the trainer as text. PyYAML has no 1.2 mode, so this loader adds the 1.2 float pattern to its
safe loader (the standard recipe; nothing else about parsing changes).
"""
from __future__ import annotations

import io
import re
from typing import Any, Optional

import yaml


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3``, ``5E+4`` and ``.5e-2`` as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str, name: Optional[str] = None) -> Any:
    """Parse YAML text like ``yaml.safe_load``, with ``5e-4`` read as the float 0.0005. ``name`` (the file
    the text came from) is what a syntax error's position names."""
    stream: Any = text
    if name is not None:
        stream = io.StringIO(text)
        stream.name = name
    return yaml.load(stream, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
