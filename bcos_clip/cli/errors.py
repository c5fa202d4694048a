"""The CLI's error net: which exceptions are bad input, and how each becomes one line on stderr.

`bcos-clip` turns every *expected* error (the classes of :func:`expected_errors`: files, values, keys,
configs, images, weights files) into ``bcos-clip <command>: error: <message>`` and exit code 2; the
traceback is logged at DEBUG (``--log-level DEBUG``). Anything else (AttributeError, TypeError,
ZeroDivisionError, ...) is a bug and keeps its traceback: bad input that ends up there is validated at
its source instead, with a message that names the file, key or flag.

Argument errors take the same one-line form (:class:`OneLineParser`), with argparse's exit code 2.
"""
from __future__ import annotations

import argparse
import functools
import re
from typing import NoReturn, Tuple, Type

MAX_CHARS = 600
# torch.utils.data re-raises a worker's exception as "Caught X in DataLoader worker process N.\nOriginal
# Traceback (most recent call last): ... X: message": the last line is the worker's own message.
_WORKER = re.compile(r"^Caught \w+ (in .+?)\.\s*\nOriginal Traceback \(most recent call last\):", re.S)
_ERROR_NAME = re.compile(r"^[\w.]*(Error|Exception): ")


@functools.lru_cache(maxsize=None)
def expected_errors() -> Tuple[Type[BaseException], ...]:
    """The exception classes that mean bad input (imported lazily: `bcos-clip X --help` stays quick).

    OSError covers FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
    PermissionError and PIL's UnidentifiedImageError; ValueError covers json.JSONDecodeError and
    UnicodeDecodeError; RuntimeError the library's "cannot do this with these inputs" errors; MissingExtra
an optional dependency the command line needs (``bcos_clip.cli.preflight``).
    """
    import yaml
    from PIL import Image
    from safetensors import SafetensorError

    from bcos_clip.runtime.extras import MissingExtra

    return (OSError, ValueError, KeyError, RuntimeError, OverflowError, yaml.YAMLError,
            Image.DecompressionBombError, SafetensorError, MissingExtra)


def _yaml_message(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    if mark is None:
        return f"YAML error: {problem}"
    return f"{mark.name}: YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _text(exc: BaseException) -> str:
    import yaml

    if isinstance(exc, yaml.YAMLError):
        return _yaml_message(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # str(KeyError) would quote it
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{exc.filename}{target}: {exc.strerror}"
    return str(exc)


def describe(exc: BaseException) -> str:
    """One line for an expected error: its message (the worker's own for DataLoader errors), lines
    joined, long texts cut; the exception's type name when it has no message."""
    text = _text(exc).strip()
    worker = _WORKER.match(text)
    if worker:
        last = [ln.strip() for ln in text.splitlines() if ln.strip()][-1]
        text = f"{_ERROR_NAME.sub('', last, count=1)} ({worker.group(1)})"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = " ".join(lines) if lines else type(exc).__name__
    if len(line) > MAX_CHARS:
        line = line[:MAX_CHARS] + " [...] (the rest with --log-level DEBUG)"
    return line


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``<prog>: error: <message>`` (exit code 2), like the
    rest of the CLI's errors; ``--help`` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")
