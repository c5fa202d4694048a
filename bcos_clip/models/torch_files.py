"""Reading `torch.save` files without running code from them.

A `torch.save` file is a pickle, and unpickling calls whatever functions and classes the file names:
a downloaded checkpoint can run code on load. bcos_clip never does that (the caller's explicit
`trust_pickle` aside):

- `load_tensors(path, what)`: `torch.load(weights_only=True)`: tensors, containers, numbers and
  strings only; anything else refuses the file with one line naming it.
- `load_training_checkpoint(path, what)`: the same, except that the classes a trainer pickles beside
  its weights (PyTorch Lightning's `AttributeDict`, `argparse.Namespace`, numpy scalars, OmegaConf
  containers, torch / torchvision / torchmetrics objects, the B-cosification trainer's own `bcos.*`
  config objects) come back as inert `OpaqueObject` records: their modules are never imported and
  nothing in them is called (torch's weights-only unpickler builds each record from our stand-in
  class). A file naming any other global (`builtins.exec`, `subprocess.*`, ...; torch itself blocks
  `os` and `sys`) is refused with one line before anything is unpickled.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

PathLike = Union[str, Path]

# Globals a training checkpoint may name beside its tensors; they become inert records.
TOLERATED_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "lightning_utilities.",
                      "omegaconf.", "numpy.", "torch.", "torchvision.", "torchmetrics.", "bcos.",
                      "argparse.Namespace", "pathlib.", "collections.", "functools.partial", "enum.",
                      "datetime.", "decimal.Decimal", "fractions.Fraction", "uuid.UUID", "typing.")
# builtin data types may appear as values (a defaultdict's factory, a config's `type`): inert too
TOLERATED_BUILTINS = frozenset(f"builtins.{t}" for t in ("list", "dict", "tuple", "set", "frozenset", "int", "float",
                                                        "complex", "str", "bytes", "bytearray", "bool", "object",
                                                        "slice", "range", "NoneType"))
# ... of which these are dict subclasses (filled by SETITEMS): they come back as plain dicts.
DICT_LIKE_SUFFIXES = ("AttributeDict", "collections.defaultdict", "collections.OrderedDict")


class UnsafeFileError(ValueError):
    """A file that cannot be read without running code from it (one line, naming the file)."""


class OpaqueObject:
    """What a pickled object of a tolerated foreign class becomes: its pickled name, the arguments
    and the state the pickle gave it. Nothing of the original class is imported or called."""

    pickled_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "OpaqueObject":
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments are kept by __new__; nothing else happens."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.pickled_name}: not unpickled>"


class _AsDict:
    """Stand-in for dict subclasses: the pickle fills a plain dict (torch only lets SETITEMS fill dicts)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Dict[Any, Any]:  # type: ignore[misc]
        return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_tensors(path: PathLike, what: str = "file") -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; any failure is one line naming `path`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(f"{p}: {what} holds more than tensors, not unpickled (it could run code): "
                              f"{_first_line(exc)}") from None
    except Exception as exc:  # corrupt archives raise RuntimeError, EOFError, zipfile errors, ...
        raise ValueError(f"{p}: not a readable {what}: {_first_line(exc)}") from None


def pickled_globals(path: PathLike) -> Optional[List[str]]:
    """The globals a zip-format `torch.save` file names beyond torch's weights-only allowlist, read
    statically (nothing is unpickled); None when the file is not a zip-format torch file."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip archive (legacy torch format, or not a torch file at all)
        return None


def is_tolerated(name: str) -> bool:
    return name.startswith(TOLERATED_PREFIXES) or name in TOLERATED_BUILTINS


def _stand_ins(names: List[str]) -> List[Tuple[type, str]]:
    out: List[Tuple[type, str]] = []
    for name in names:
        if name.endswith(DICT_LIKE_SUFFIXES):
            out.append((_AsDict, name))
        else:
            out.append((type(f"Opaque[{name}]", (OpaqueObject,), {"pickled_name": name}), name))
    return out


def load_training_checkpoint(path: PathLike, what: str = "checkpoint") -> Any:
    """A trainer's `torch.save` file (e.g. a PyTorch Lightning `.ckpt`) without running its pickle.

    Tensors and containers load as usual; objects of tolerated classes (TOLERATED_PREFIXES) become
    OpaqueObject records (dict subclasses: plain dicts). Raises UnsafeFileError when the file names
    any other global, ValueError when it is not a readable torch file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    names = pickled_globals(p)
    if not names:  # nothing beyond the allowlist (or a legacy / foreign file: weights-only decides)
        return load_tensors(p, what)
    refused = [n for n in names if not is_tolerated(n)]
    if refused:
        shown = ", ".join(refused[:4]) + (f" (+{len(refused) - 4} more)" if len(refused) > 4 else "")
        raise UnsafeFileError(f"{p}: the {what} names {shown}, which could run code when unpickled: "
                              "not loaded")
    try:
        with torch.serialization.safe_globals(_stand_ins(names)):
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(f"{p}: the {what} cannot be read without running its pickle: "
                              f"{_first_line(exc)}") from None
    except Exception as exc:
        raise ValueError(f"{p}: not a readable {what}: {_first_line(exc)}") from None
