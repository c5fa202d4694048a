"""benchmarks/gpu_check.sh --quick: the GPU check's stages dry-run on the CPU with tiny towers (accounting,
Triton check, `bcos-clip train` per precision, bench rows, one merged JSON). No timing is asserted."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_one_json(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), TRAIN_STEPS="2", GPU_CHECK_BUDGET="900")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    train = result["train"]
    assert train["ok"] and [r["precision"] for r in train["runs"]] == ["amp_bf16", "amp"]
    assert all(r["losses_finite"] and r["checkpoint"] for r in train["runs"])
    sections = {r.get("section") for r in result["bench"]["rows"] if r.get("status", "ok") == "ok"}
    assert {"train", "train_fwd", "e2e"} <= sections
    acc = result["accounting"]["accounting"]
    assert set(acc["memory"]) == set(acc["cost"]["towers"]) == {"RN50", "ViT-B-16"}
    assert result["layers"]["triton_check"]
