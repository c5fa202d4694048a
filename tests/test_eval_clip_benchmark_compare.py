"""The same ``clip_benchmark eval`` command lines through CLIP_benchmark itself (1.6.2, in its own
environment, on the CPU through ``scripts/clip_benchmark_cpu.py``) and through ``bcos-clip eval``:
the same result files, CLIP_benchmark's keys with its values, every metric equal to the last bit: zero-shot,
retrieval and the linear probes of unmodified CLIP_benchmark (features extracted, then cached, and few-shot
with a validation split), whose permutation bcos-clip draws where their global RNG stands.

Slow, and skipped unless CLIP_benchmark can be run: set ``CLIP_BENCHMARK_PYTHON`` to the python of an
environment where ``clip_benchmark==1.6.2`` is installed (e.g. a venv that sees this one's packages
through a ``.pth`` file; it needs ``numpy<2.4``, which its accuracy code was written for).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_clip_benchmark.py"


def clip_benchmark_python() -> str:
    python = os.environ.get("CLIP_BENCHMARK_PYTHON")
    if not python and importlib.util.find_spec("clip_benchmark") is not None:
        python = sys.executable
    if not python:
        pytest.skip("clip_benchmark is not installed (set CLIP_BENCHMARK_PYTHON to a python that has it)")
    probe = subprocess.run([python, "-c", "import clip_benchmark.cli"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import clip_benchmark.cli: {probe.stderr.strip().splitlines()[-1:]}")
    return python


def test_clip_benchmark_and_bcos_clip_agree(tiny_rn, tiny_rn_bcos, tmp_path):
    import bcos_clip
    from bcos_clip.data.shapes.writer import build_world
    from bcos_clip.models.loading import model_source

    python = clip_benchmark_python()
    world = build_world(tmp_path / "world", n_train=32, n_eval_per_class=5, n_retrieval=20, workers=1)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "teacher_rn.json").write_text(json.dumps({"model_cfg": model_source(tiny_rn[0])["model_cfg"]}))
    torch.save(tiny_rn[0].state_dict(), teacher / "teacher_rn.pt")
    student = bcos_clip.save(tiny_rn_bcos, tmp_path / "student")
    out = tmp_path / "compare.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--cb-python", python,
                           "--wds-root", str(world.wds_root), "--teacher-config", str(teacher / "teacher_rn.json"),
                           "--teacher-weights", str(teacher / "teacher_rn.pt"), "--student", str(student),
                           "--work", str(tmp_path / "work"), "--json", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert not result["problems"]
    files = {r["file"] for r in result["rows"]}
    assert len(files) == 12  # 2 models x (2 zero-shot + 1 retrieval + 3 linear-probe runs)
    compared = [r for r in result["rows"] if r["metric"] in ("acc1", "lp_acc1", "image_retrieval_recall@5")]
    assert len(compared) == 12 and all(r["diff"] == 0 for r in compared)
