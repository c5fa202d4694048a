"""The bottom layer: one device picker, one precision table, shipped files, run files."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch

from bcos_clip.runtime import resources as shipped
from bcos_clip.runtime.device import pick_device
from bcos_clip.runtime.precision import autocast, effective_precision, resolve_precision
from bcos_clip.runtime.runfiles import read_jsonl, read_metrics, read_world_marker, world_args

REPO = Path(__file__).resolve().parents[1]


def test_pick_device_auto_names_and_bad_values(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == pick_device("auto") == pick_device("") == torch.device("cpu")
    assert pick_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="--device 'tpu'"):
        pick_device("tpu")


def test_precision_table_is_shared_by_training_and_evaluation():
    cpu = torch.device("cpu")
    assert resolve_precision("amp", cpu).name == effective_precision("amp", cpu) == "fp32"
    assert resolve_precision("bf16", cpu).weight_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="choose one of fp32, amp, amp_bf16$"):
        effective_precision("bf16", cpu)  # pure bf16 weights are a training choice
    with autocast("amp_bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_shipped_files_installed_and_from_a_source_tree(monkeypatch):
    assert shipped.resource_file(shipped.CONFIGS, "tiny_rn.json").read_bytes() == \
        (REPO / "configs" / "tiny_rn.json").read_bytes()
    assert "<html" in shipped.resource_text(shipped.SERVE_STATIC, "index.html").lower()
    with pytest.raises(FileNotFoundError, match="nope.yaml not found in bcos_clip.eval_suites"):
        shipped.resource_file(shipped.EVAL_SUITES, "nope.yaml")

    def not_installed(package: str):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(resources, "files", not_installed)  # a source tree on sys.path, not installed
    assert shipped.resource_file(shipped.EVAL_SUITES, "suites/demo.yaml") == REPO / "eval" / "suites" / "demo.yaml"


def test_run_files_are_read_one_way(tmp_path, caplog):
    assert read_metrics(tmp_path) == [] and read_world_marker(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n\n[1]\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    assert read_jsonl(tmp_path / "metrics.jsonl") == read_metrics(tmp_path) == [{"step": 1}, {"step": 2, "loss": 0.5}]
    assert "skipped 2 line(s)" in caplog.text
    with pytest.raises(FileNotFoundError, match="world.json: not a built shapes world"):
        world_args(tmp_path)
    (tmp_path / "world.json").write_text("{broken")
    assert read_world_marker(tmp_path) == {"status": "corrupt"}
    (tmp_path / "world.json").write_text(json.dumps({"status": "building", "args": {"seed": 0}}))
    with pytest.raises(ValueError, match="incomplete"):
        world_args(tmp_path)
    (tmp_path / "world.json").write_text(json.dumps({"status": "complete", "args": {"seed": 0}}))
    assert world_args(tmp_path) == {"seed": 0}
