"""Trainer state on disk without pickle: tensors in safetensors, everything else in JSON.

The state (optimizer and scaler state dicts, schedule, step, epoch, counters, RNG states of python,
numpy, torch and CUDA, the run plan) is a tree of dicts, lists, tuples, numbers, strings, tensors and
numpy arrays. `encode` splits it into a JSON tree and a flat dict of tensors; `decode` rebuilds it
exactly (tuples stay tuples, integer dict keys stay integers, dtypes are kept, floats round-trip).
Reading never runs code from the files: JSON and safetensors only hold data.

JSON markers (a dict with one of these keys stands for a value of that kind):
  {"__tensor__": name}                   a tensor stored under `name` in the safetensors file
  {"__ndarray__": name, "dtype": "..."}  a numpy array (stored as int64 / float64 / bool, cast back)
  {"__tuple__": [...]}                    a tuple
  {"__dict__": [[key, value], ...]}       a dict with non-string keys (or keys that look like markers)
  {"__float__": "inf" | "-inf" | "nan"}   a non-finite float (kept out of the JSON, which stays strict)
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "bcos_clip.train_state"
VERSION = 1
MARKERS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__", "__float__")
STORAGE_DTYPES = {"i": np.int64, "u": np.int64, "b": np.bool_, "f": np.float64}  # numpy kind -> stored as


class StateFileError(ValueError):
    """A trainer-state file that cannot be read (one line, naming the file)."""


def _plain_key_dict(obj: dict) -> bool:
    return all(isinstance(k, str) and not k.startswith("__") for k in obj)


def encode(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """The JSON tree of `obj`; its tensors and arrays are added to `tensors` (names t0, t1, ...)."""
    if isinstance(obj, np.generic):  # numpy scalars (np.float64 is also a float): as Python numbers
        return encode(obj.item(), tensors)
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in STORAGE_DTYPES:
            raise TypeError(f"trainer state: cannot store a numpy array of dtype {obj.dtype}")
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj.astype(STORAGE_DTYPES[obj.dtype.kind])))
        return {"__ndarray__": name, "dtype": obj.dtype.str}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if _plain_key_dict(obj):
            return {k: encode(v, tensors) for k, v in obj.items()}
        return {"__dict__": [[encode(k, tensors), encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"trainer state: cannot store a {type(obj).__name__} (tensors, arrays, numbers, strings, "
                    "lists, tuples and dicts only)")


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def decode(tree: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode`. Raises KeyError / ValueError / TypeError on a malformed tree."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    marker = next((m for m in MARKERS if m in tree), None)
    if marker is None:
        return {k: decode(v, tensors) for k, v in tree.items()}
    if marker == "__tensor__":
        return tensors[tree["__tensor__"]]
    if marker == "__ndarray__":
        return tensors[tree["__ndarray__"]].numpy().astype(np.dtype(tree["dtype"]))
    if marker == "__tuple__":
        return tuple(decode(v, tensors) for v in tree["__tuple__"])
    if marker == "__float__":
        if tree["__float__"] not in ("inf", "-inf", "nan"):
            raise ValueError(f"bad __float__ value {tree['__float__']!r}")
        return float(tree["__float__"])
    return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in tree["__dict__"]}


def write_state(json_path: Path, tensors_path: Path, state: Dict[str, Any]) -> None:
    """Write `state` as `json_path` (JSON) + `tensors_path` (safetensors)."""
    tensors: Dict[str, torch.Tensor] = {}
    tree = encode(state, tensors)
    save_file(tensors, str(tensors_path), metadata={"format": FORMAT, "version": str(VERSION)})
    json_path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "state": tree}, allow_nan=False))


def read_state(json_path: Path, tensors_path: Path) -> Dict[str, Any]:
    """Read what `write_state` wrote; a missing, corrupt or foreign file is a one-line StateFileError."""
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFileError(f"{json_path}: not a readable trainer state ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise StateFileError(f"{json_path}: not a bcos_clip trainer state (format {FORMAT!r} version {VERSION})")
    try:
        tensors = load_file(str(tensors_path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise StateFileError(f"{tensors_path}: not a readable safetensors file ({exc})") from None
    try:
        state = decode(doc["state"], tensors)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise StateFileError(f"{json_path}: malformed trainer state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise StateFileError(f"{json_path}: the trainer state is not a mapping")
    return state


def state_files(directory: Path, stem: str) -> Tuple[Path, Path]:
    """(JSON path, safetensors path) of a trainer state named `stem` in `directory`."""
    return directory / f"{stem}.json", directory / f"{stem}.safetensors"
