"""Strict JSON for the files the toolkit writes: a NaN or inf is refused with the key that holds it
(``json.dumps`` would write the invalid tokens ``NaN`` / ``Infinity``, which other readers reject).

Used where a non-finite number would be a bug (configs, summaries, scores); where a number may
legitimately be missing, callers write ``null`` instead (e.g. ``evaluation.results.sanitize``).
"""
from __future__ import annotations

import json
import math
from typing import Any, Optional


def nonfinite_key(obj: Any, path: str = "") -> Optional[str]:
    """The dotted key path of the first non-finite float in ``obj`` (dicts, lists, tuples), else None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (path or "(the value itself)")
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = nonfinite_key(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def dumps_strict(obj: Any, what: str, **kwargs: Any) -> str:
    """``json.dumps(obj, allow_nan=False, **kwargs)``; a NaN / inf raises ValueError naming ``what`` and the key."""
    key = nonfinite_key(obj)
    if key is not None:
        raise ValueError(f"{what}: {key} is not a finite number; refusing to write NaN / inf into JSON")
    return json.dumps(obj, allow_nan=False, **kwargs)
