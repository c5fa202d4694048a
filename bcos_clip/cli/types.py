"""argparse types for numeric flags: non-finite, out-of-range and malformed numbers are refused while
parsing, as ``bcos-clip <command>: error: argument --flag: <why>, got <value>`` (exit code 2).

Example::

    p.add_argument("--lr", type=positive_float)            # 0, -1, nan, inf refused
    p.add_argument("--port", type=port)                    # 1..65535
    p.add_argument("--batches", type=int_list(minimum=1))  # "64,128"
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, List, Optional, Union

Number = Union[int, float]


def _parse(text: str, kind: type) -> Number:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _fmt(value: Number) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _rule(kind: type, low: Optional[Number], high: Optional[Number], low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"must be {'>' if low_open else '>='} {_fmt(low)}"
    if kind is int and not (low_open or high_open):
        return f"must be in {low}..{high}"
    return f"must be in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"


def number(kind: type = float, low: Optional[Number] = None, high: Optional[Number] = None,
           low_open: bool = False, high_open: bool = False, name: Optional[str] = None) -> Callable[[str], Number]:
    """An argparse type: ``kind(text)``, finite (floats), within ``[low, high]`` (open ends if asked)."""
    rule = _rule(kind, low, high, low_open, high_open) if low is not None else ""

    def parse(text: str) -> Number:
        value = _parse(text, kind)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    parse.__name__ = name or kind.__name__
    return parse


integer = number(int, name="integer")
finite_float = number(float, name="finite_float")
positive_float = number(float, 0.0, low_open=True, name="positive_float")
non_negative_float = number(float, 0.0, name="non_negative_float")
probability = number(float, 0.0, 1.0, name="probability")
open_fraction = number(float, 0.0, 1.0, low_open=True, high_open=True, name="open_fraction")
unit_fraction = number(float, 0.0, 1.0, low_open=True, name="unit_fraction")
beta = number(float, 0.0, 1.0, high_open=True, name="beta")
positive_int = number(int, 1, name="positive_int")
non_negative_int = number(int, 0, name="non_negative_int")
port = number(int, 1, 65535, name="port")
bcos_b = number(float, 1.0, name="bcos_b")  # B of B-cos layers: 1 = linear


def all_or_positive_int(text: str) -> int:
    """``-1`` (meaning "all") or an integer >= 1."""
    value = _parse(text, int)
    if value != -1 and value < 1:
        raise argparse.ArgumentTypeError(f"must be -1 (all) or >= 1, got {text}")
    return value


def smoothing_kernel(text: str) -> int:
    """A box-smoothing kernel: 0 (none) or an odd integer."""
    value = _parse(text, int)
    if value < 0 or (value > 1 and value % 2 == 0):
        raise argparse.ArgumentTypeError(f"must be 0 (none) or odd, got {text}")
    return value


def int_list(minimum: int = 1) -> Callable[[str], List[int]]:
    """Comma-separated integers, each >= ``minimum``: ``"64,128,256"`` -> [64, 128, 256]."""
    each = number(int, minimum)

    def parse(text: str) -> List[int]:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        try:
            return [each(p) for p in parts]
        except argparse.ArgumentTypeError as exc:
            if "expected an integer" in str(exc):
                raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
            raise

    parse.__name__ = "int_list"
    return parse


def log_level(text: str) -> str:
    """A logging level name (case-insensitive): DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    name = text.upper()
    if name not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {text!r}")
    return name
