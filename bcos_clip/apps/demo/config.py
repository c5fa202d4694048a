"""The demo's configuration: run options (argv) and its settings (``configs/demo.yaml``) as frozen data.

``DemoConfig`` holds what the command line decides (output folder, quick, arch, seed, settings file);
``load_settings(cfg)`` reads the YAML, deep-merges its ``quick:`` section (for ``--quick``) and its
``arch: {<arch>: ...}`` section over the top level, and checks every key against ``SECTIONS``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from bcos_clip.models.loading import deep_merge
from bcos_clip.runtime.resources import CONFIGS, resource_file
from bcos_clip.runtime.yaml_io import load_yaml

ARCHES = ("rn", "vit")
SETTINGS_NAME = "demo.yaml"
# Known keys per section (a typo in the YAML is an error naming the key, not a silent default).
SECTIONS: Dict[str, tuple] = {
    "world": ("n_train", "n_eval_per_class", "image_size"),
    "teacher": ("steps", "batch_size", "lr", "warmup", "weight_decay", "vision"),
    "distill": None,  # TrainConfig fields: checked by TrainConfig itself
    "compare": ("losses", "steps"),
    "eval": ("suite", "batch_size", "probe_epochs"),
    "explain": ("scenes", "prompts", "templates", "cell"),
    "pointing": ("dataset", "grid", "n_grids", "per_class", "threshold", "baselines", "n_examples",
                 "target_margin"),
}
# TrainConfig fields the demo sets itself (a YAML value for them would be ignored, so it is refused).
DEMO_OWNED = ("model", "pretrained", "train_data", "output", "seed", "device", "resume")


@dataclass(frozen=True)
class DemoConfig:
    """What ``bcos-clip demo`` was asked for.

    output: the demo folder (world, teacher, students, eval, figures, report.md, summary.json);
    settings: a YAML file (None: the shipped ``configs/demo.yaml``); threads: torch threads (None:
    ``default_threads()``, the cores other processes leave idle); compare_losses: also distil one student
    per ``compare.losses`` entry and compare them (the main path distils one student).
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


def default_threads() -> int:
    """Torch threads for this machine now: its cores minus those other processes keep busy, at least 1.

    OpenMP threads spin-wait for each other, so threads that compete with other processes for cores
    make every step many times slower (measured: a distillation step 0.9 s with 1 thread, 13 s with
    2 threads, on 2 cores at load 7); on an idle machine every core is used (measured: the full demo
    9.9 min with 2 threads, 15.8 min with 1, on an idle 2-core machine).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, int(cores - busy_cores() + 0.5)))


def busy_cores(window: float = 0.5) -> float:
    """Cores kept busy by other processes now: /proc/stat sampled over ``window`` seconds.

    The 1-minute load average (the fallback where /proc/stat is missing) lags by a minute: right after
    another heavy process ends it still counts that process, which once halved the demo's threads.
    """
    def sample():
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    try:
        idle0, all0 = sample()
        time.sleep(window)
        idle1, all1 = sample()
        ncpu = os.cpu_count() or 1
        return max(0.0, (1.0 - (idle1 - idle0) / max(all1 - all0, 1e-9)) * ncpu)
    except (OSError, ValueError, IndexError):  # no /proc/stat on this platform
        try:
            return max(0.0, os.getloadavg()[0] - 1.0)  # less one: this process
        except OSError:
            return 0.0


def settings_path(path: Optional[str] = None) -> Path:
    """The settings YAML: ``path`` if given, else ``configs/demo.yaml`` (installed or source tree)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--settings {path}: no such file")
        return p
    return resource_file(CONFIGS, SETTINGS_NAME)


def _check(settings: Dict[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - set(SECTIONS))
    if unknown:
        raise KeyError(f"{where}: unknown section(s) {unknown} (expected {sorted(SECTIONS)})")
    for name, keys in SECTIONS.items():
        section = settings.get(name)
        if not isinstance(section, Mapping):
            raise ValueError(f"{where}: section {name!r} must be a mapping, got {section!r}")
        if keys is not None:
            bad = sorted(set(section) - set(keys))
            if bad:
                raise KeyError(f"{where}: unknown key(s) {bad} in section {name!r} (expected {list(keys)})")
    owned = sorted(set(settings["distill"]) & set(DEMO_OWNED))
    if owned:
        raise KeyError(f"{where}: distill key(s) {owned} are set by the demo itself; remove them")


def load_settings(cfg: DemoConfig) -> Dict[str, Dict[str, Any]]:
    """The merged settings for ``cfg`` (quick and arch sections applied), checked; a plain dict of
    sections, so that it can be written into stage markers and ``summary.json``."""
    path = settings_path(cfg.settings)
    data = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    quick = data.pop("quick", None) or {}
    arch = (data.pop("arch", None) or {}).get(cfg.arch) or {}
    merged = deep_merge(data, quick) if cfg.quick else data
    merged = deep_merge(merged, arch)
    for name in SECTIONS:
        merged.setdefault(name, {})
    _check(merged, str(path))
    return merged
