"""The demo's run options (argv) as frozen data, and where its settings file is.

``DemoConfig`` holds what the command line decides (output folder, quick, arch, seed, settings file,
threads, device); the settings themselves (``configs/demo.yaml``) are read once into a frozen tree by
``bcos_clip.apps.demo.settings.load_settings``.

Threads follow the rule of every command (``bcos_clip.runtime.threads``): ``--threads N``, else torch's
default (one per physical core), never a guess from how busy the cores look at the start.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bcos_clip.runtime.resources import CONFIGS, resource_file

ARCHES = ("rn", "vit")
SETTINGS_NAME = "demo.yaml"


@dataclass(frozen=True)
class DemoConfig:
    """What ``bcos-clip demo`` was asked for.

    output: the demo folder (world, teacher, students, eval, figures, report.md, summary.json);
    settings: a YAML file merged over the shipped ``configs/demo.yaml`` (None: that file alone);
    threads: torch intra-op threads (None: torch's default, one per physical core); compare_losses: also
    distil one student per ``compare.losses`` entry and compare them (the main path distils one student).
    """

    output: str = "demo_out"
    quick: bool = False
    arch: str = "rn"
    seed: int = 0
    settings: Optional[str] = None
    threads: Optional[int] = None
    device: str = "cpu"
    compare_losses: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValueError(f"--arch {self.arch!r}: choose one of {', '.join(ARCHES)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


def settings_path(path: Optional[str] = None) -> Path:
    """A settings YAML: ``path`` if given (FileNotFoundError naming --settings), else the shipped
    ``configs/demo.yaml`` (installed or source tree)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--settings {path}: no such file")
        return p
    return resource_file(CONFIGS, SETTINGS_NAME)
