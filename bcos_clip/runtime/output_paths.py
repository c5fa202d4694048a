"""Output paths checked before any work starts: a folder or file a command will write must be creatable.

Every writing command calls :func:`check_output_dir` (or :func:`check_output_file` for a single file such
as ``bench --output result.json``) on each path it will write, before it loads a model or reads data, so
a typo fails in a second with one line instead of after the work (or with a traceback).

Example::

    out = check_output_dir(args.output, "--output")      # an existing folder, or one that can be created
    cache = check_output_dir(cfg.text_cache, "--text-cache")

Nothing is left behind by a check: creatability is probed with a temporary folder that is removed at once.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class OutputPathError(ValueError):
    """An output path that cannot be written (a file in the way, a missing permission, a broken link)."""


def _first_existing(path: Path, flag: str) -> Path:
    """The nearest ancestor of ``path`` that exists (``path`` itself excluded); it must be a folder."""
    for parent in path.parents:
        if os.path.lexists(parent):
            if parent.is_dir():
                return parent
            what = "a broken link" if parent.is_symlink() and not parent.exists() else "a file, not a folder"
            raise OutputPathError(f"{flag} {path}: {parent} is {what}")
    return Path(".")


def _probe_writable(folder: Path, path: Path, flag: str) -> None:
    """Create and remove a temporary folder in ``folder`` (the only reliable test, root and read-only
    file systems included)."""
    try:
        probe = tempfile.mkdtemp(prefix=".bcos-clip-probe-", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.rmdir(probe)


def check_output_dir(path: Optional[PathLike], flag: str = "--output") -> Optional[Path]:
    """``path`` as a Path when it is an existing folder or one that can be created, else OutputPathError.

    None (an optional output that was not asked for) passes through.
    """
    if path is None or str(path) == "":
        return None
    p = Path(path)
    if os.path.lexists(p):
        if p.is_dir():
            _probe_writable(p, p, flag)
            return p
        what = "a broken link" if p.is_symlink() and not p.exists() else "an existing file, not a folder"
        raise OutputPathError(f"{flag} {p}: is {what}")
    _probe_writable(_first_existing(p, flag), p, flag)
    return p


def check_output_file(path: Optional[PathLike], flag: str = "--output") -> Optional[Path]:
    """``path`` as a Path when it is a file that can be written (new or existing), else OutputPathError."""
    if path is None or str(path) == "":
        return None
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{flag} {p}: is a folder; give a file name (e.g. {p / 'result.json'})")
    if os.path.lexists(p) and not p.exists():
        raise OutputPathError(f"{flag} {p}: is a broken link")
    _probe_writable(_first_existing(p, flag), p, flag)
    return p
