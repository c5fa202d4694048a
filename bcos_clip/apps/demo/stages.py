"""Stages of the demo: run once, reuse while their inputs are unchanged, and time every run.

A stage writes ``<output>/stages/<name>.json`` with its arguments (everything that decides its result,
including digests of what earlier stages produced), its JSON result and its wall / CPU seconds. The
next run with equal arguments returns the stored result instead of running again; different arguments
(or a missing or incomplete marker) run it afresh, replacing the stage's folders only once it succeeds.

Example::

    stages = StageRunner(Path("demo_out"))
    result = stages.run("distill_text_kd", {"steps": 300, "teacher": digest}, train_it,
                        clear=[Path("demo_out/students/text_kd")])
"""
from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

STAGES_DIR = "stages"
STAGE_VERSION = 1


def canonical(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples -> lists, paths -> str), for exact comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (shard writers, data workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass
class StageTiming:
    """One stage: wall and CPU seconds of its work (for a reused stage: of the run that produced it),
    and whether this run reused it."""

    name: str
    wall_s: float
    cpu_s: float
    cached: bool


@dataclass
class StageRunner:
    """Runs named stages under ``root`` with markers in ``root/stages``; collects their timings."""

    root: Path
    timings: List[StageTiming] = field(default_factory=list)

    def marker(self, name: str) -> Path:
        return Path(self.root) / STAGES_DIR / f"{name}.json"

    def cached(self, name: str, args: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The stored marker of ``name`` when it completed with exactly ``args``, else None."""
        path = self.marker(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if data.get("version") != STAGE_VERSION or data.get("status") != "complete":
            return None
        return data if data.get("args") == canonical(args) else None

    def run(self, name: str, args: Dict[str, Any], fn: Callable[[], Dict[str, Any]],
            clear: Sequence[Path] = ()) -> Dict[str, Any]:
        """``fn()`` (a JSON-able dict) unless a complete marker with the same ``args`` exists.

        Folders in ``clear`` (stale results of other arguments) are replaced by a fresh run: kept aside
        while it runs, removed when it succeeds, put back (with the old marker) when it fails.
        """
        hit = self.cached(name, args)
        if hit is not None:
            log.info("stage %s: reusing the result of a previous run (%s)", name, self.marker(name))
            self.timings.append(StageTiming(name, float(hit.get("wall_s", 0.0)), float(hit.get("cpu_s", 0.0)), True))
            return hit["result"]
        path = self.marker(name)
        previous = path.read_text() if path.is_file() else None
        moved = _set_aside(clear, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": STAGE_VERSION, "status": "running", "args": canonical(args)}))
        wall, cpu = time.perf_counter(), cpu_seconds()
        try:
            result = canonical(fn())
        except BaseException:  # a failed or interrupted stage leaves the previous result as it was
            _put_back(moved)
            if previous is None:
                path.unlink()
            else:
                path.write_text(previous)
            raise
        for _, aside in moved:
            shutil.rmtree(aside)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        self.timings.append(StageTiming(name, round(wall, 2), round(cpu, 2), False))
        path.write_text(json.dumps({"version": STAGE_VERSION, "status": "complete", "args": canonical(args),
                                    "result": result, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)},
                                   indent=1))
        log.info("stage %s: done in %.1f s (CPU %.1f s)", name, wall, cpu)
        return result

    def timed(self, name: str, fn: Callable[[], Any], output: Optional[Path] = None) -> Any:
        """Run ``fn()``, which caches by itself (world, teacher): time it, record it, return its value.

        ``output``: a file ``fn`` rewrites whenever it does the work; unchanged = reused.
        """
        before = _mtime(output)
        wall, cpu = time.perf_counter(), cpu_seconds()
        value = fn()
        wall, cpu = round(time.perf_counter() - wall, 2), round(cpu_seconds() - cpu, 2)
        reused = before is not None and before == _mtime(output)
        marker = self.marker(name)
        if reused:  # report the times of the run that did the work, when known
            try:
                data = json.loads(marker.read_text())
                wall, cpu = float(data["wall_s"]), float(data["cpu_s"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        else:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"version": STAGE_VERSION, "status": "complete", "wall_s": wall,
                                          "cpu_s": cpu}))
        self.timings.append(StageTiming(name, wall, cpu, reused))
        return value


def _set_aside(folders: Sequence[Path], stage: str) -> List[Tuple[Path, Path]]:
    """Rename each existing folder to a hidden sibling until the stage succeeds; [(folder, aside)]."""
    moved = []
    for folder in map(Path, folders):
        aside = folder.with_name(f".{folder.name}.before-{stage}")
        if aside.exists():  # left by a killed run, whose partial result is in ``folder``
            shutil.rmtree(aside)
        if folder.exists():
            log.info("stage %s: inputs changed, replacing %s (kept aside until the stage succeeds)", stage, folder)
            folder.rename(aside)
            moved.append((folder, aside))
    return moved


def _put_back(moved: List[Tuple[Path, Path]]) -> None:
    for folder, aside in moved:
        if folder.exists():
            shutil.rmtree(folder)
        aside.rename(folder)


def _mtime(path: Optional[Path]) -> Optional[int]:
    try:
        return Path(path).stat().st_mtime_ns if path is not None else None
    except OSError:
        return None
