"""The demo's output folder: the demo writes (and, when its settings change, rebuilds) only a folder it made.

``claim_demo_folder(out)`` runs before the demo touches anything. A new or empty folder becomes a demo
folder (it gets the marker ``.bcos_clip_demo.json``); a folder with that marker, or one written by an
earlier version of the demo (its ``stages/*.json`` markers), is reused; any other non-empty folder is
refused with one line, so the user's ``bcosified/``, ``students/``, ``report.md`` ... there are never
removed or overwritten.

Example::

    out = claim_demo_folder(Path("demo_out"))   # or DemoFolderError
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from bcos_clip.apps.demo.stages import STAGES_DIR

log = logging.getLogger(__name__)

MARKER = ".bcos_clip_demo.json"
MARKER_VERSION = 1


class DemoFolderError(ValueError):
    """The demo's --output is a non-empty folder the demo did not make."""


def _stage_marker(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "version" in data and data.get("status") in ("running", "complete")


def made_by_demo(out: Path) -> bool:
    """True when ``out`` carries the demo's marker, or the stage markers of an earlier demo version."""
    if (out / MARKER).is_file():
        return True
    stages = out / STAGES_DIR
    return stages.is_dir() and any(_stage_marker(p) for p in stages.glob("*.json"))


def claim_demo_folder(out: Path) -> Path:
    """Create or reuse the demo folder ``out`` (see the module doc); returns it."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not made_by_demo(out):
        raise DemoFolderError(f"--output {out}: the folder is not empty and was not made by bcos-clip demo "
                              f"(no {MARKER}); the demo would replace what is there: choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        (out / MARKER).write_text(json.dumps({"made_by": "bcos-clip demo", "version": MARKER_VERSION}) + "\n")
    return out
