"""Reading only inside a folder: no links that leave it, no ``..``, no absolute names from a file.

A checkpoint, an export source or an examples folder comes from someone else; the names in it (a
``config.json`` entry, a symlink) must not make bcos_clip read, copy or serve files elsewhere. A path is
*inside* a folder when its fully resolved form (every link followed) lies under the folder's resolved
form; links that stay inside (``checkpoints/latest -> step_N``) are fine.

Example::

    path = file_inside(ckpt_dir, ckpt_dir / "model.safetensors", "checkpoint")  # or OutsideFolderError
    if regular_file_inside(examples_dir, candidate) is None:
        skip(candidate)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]


class OutsideFolderError(ValueError):
    """A name or link in a folder that points outside it (or at something that is not a regular file)."""


def is_inside(root: PathLike, path: PathLike) -> bool:
    """True when ``path`` (every link followed; relative paths taken under ``root``) lies in ``root``."""
    base = Path(root).resolve()
    target = (Path(root) / path).resolve()  # an absolute ``path`` replaces ``root`` here
    return target == base or base in target.parents


def regular_file_inside(root: PathLike, path: PathLike) -> Optional[Path]:
    """The resolved path of ``path`` when it is a regular file inside ``root``, else None."""
    if not is_inside(root, path):
        return None
    target = (Path(root) / path).resolve()
    return target if target.is_file() else None


def file_inside(root: PathLike, path: PathLike, what: str) -> Path:
    """:func:`regular_file_inside` or an :class:`OutsideFolderError` naming ``what``, the file and the folder."""
    found = regular_file_inside(root, path)
    if found is not None:
        return found
    p = Path(root) / path
    if not is_inside(root, path):
        raise OutsideFolderError(f"{what} {root}: {p} points outside the folder (to {p.resolve()}); "
                                 "only files inside it are read")
    raise OutsideFolderError(f"{what} {root}: {p} is not a regular file")


def folder_inside(root: PathLike, path: PathLike, what: str) -> Path:
    """The resolved folder ``path`` when it lies inside ``root`` and nothing in it links out of ``root``;
    else :class:`OutsideFolderError`."""
    p = Path(root) / path
    for entry in [p] + (sorted(p.resolve().rglob("*")) if is_inside(root, p) and p.is_dir() else []):
        if not is_inside(root, entry):
            raise OutsideFolderError(f"{what} {root}: {entry} points outside the folder (to {entry.resolve()}); "
                                     "only files inside it are read")
    if not p.is_dir():
        raise OutsideFolderError(f"{what} {root}: {p} is not a folder")
    return p.resolve()
