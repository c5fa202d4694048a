"""The demo's settings as one frozen dataclass tree read once from configs/demo.yaml; defaults only there;
unknown keys are one line naming the file and the key (with the nearest known key); the demo's threads."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from bcos_clip.apps.demo.config import DemoConfig, settings_path
from bcos_clip.apps.demo.settings import (SECTION_CLASSES, as_dict, build_settings, load_settings,
                                          read_settings_file)
from bcos_clip.runtime.threads import set_threads


def _write(tmp_path, data) -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("bad, message", [
    ({"pointing": {"n_grid": 3}}, "unknown key 'n_grid' in section 'pointing' (did you mean 'n_grids'?)"),
    ({"pointng": {}}, "unknown section 'pointng' (did you mean 'pointing'?)"),
    ({"quick": {"eval": {"probe_epoch": 1}}}, "quick: unknown key 'probe_epoch' in section 'eval' (did you mean "
                                              "'probe_epochs'?)"),
    ({"arch": {"vit": {"distill": {"learning_rate": 1e-3}}}}, "arch.vit: unknown key 'learning_rate' in section "
                                                              "'distill'"),
    ({"arch": {"vitt": {}}}, "unknown arch 'vitt' under 'arch' (did you mean 'vit'?)"),
    ({"distill": {"save_every": 5}}, "distill key 'save_every' is set by the demo itself"),
])
def test_unknown_keys_name_the_file_and_the_key(tmp_path, bad, message):
    path = _write(tmp_path, bad)
    with pytest.raises(KeyError) as err:
        load_settings(DemoConfig(settings=path))
    assert err.value.args[0] == f"{path}: {message}" or err.value.args[0].startswith(f"{path}: {message}")


@pytest.mark.parametrize("bad, message", [
    ({"pointing": {"grid": "3"}}, "pointing.grid: expected int, got '3'"),
    ({"eval": {"batch_size": None}}, "eval.batch_size: null is not allowed here"),
    ({"explain": {"prompts": "red circle"}}, "explain.prompts: expected a list"),
    ({"distill": {"lr": -1.0}}, "distill: lr (--lr): must be > 0"),
    ({"distill": {"loss": "mse"}}, "distill: --loss 'mse': choose one of"),
    ({"world": {"collage_share": 2}}, "world.collage_share: must be between 0 and 1, got 2.0"),
    ({"world": {"collage_share": "0.2"}}, "world.collage_share: expected float, got '0.2'"),
])
def test_bad_values_name_the_key(tmp_path, bad, message):
    path = _write(tmp_path, bad)
    with pytest.raises(ValueError, match=f"^{path}: " + message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(DemoConfig(settings=path))


def test_a_settings_file_changes_only_its_keys(tmp_path):
    shipped = load_settings(DemoConfig(quick=True))
    mine = load_settings(DemoConfig(quick=True, settings=_write(tmp_path, {"pointing": {"n_grids": 7},
                                                                           "quick": {"distill": {"steps": 3}}})))
    assert mine.pointing.n_grids == 7 and mine.distill["steps"] == 3
    assert dataclasses.replace(mine.pointing, n_grids=shipped.pointing.n_grids) == shipped.pointing
    assert {k: v for k, v in mine.distill.items() if k != "steps"} == \
        {k: v for k, v in shipped.distill.items() if k != "steps"}
    assert mine.explain == shipped.explain and mine.teacher == shipped.teacher


def test_settings_are_frozen_and_read_once(tmp_path):
    s = load_settings(DemoConfig())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.pointing.grid = 5
    with pytest.raises(TypeError):
        s.distill["lr"] = 1.0
    assert isinstance(s.explain.scenes, tuple) and isinstance(s.explain.scenes[0], tuple)


def test_defaults_live_in_the_yaml_only():
    for cls in SECTION_CLASSES.values():  # no field has a default: the YAML must give every key
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(cls)), cls
    data = read_settings_file(settings_path())
    del data["pointing"]["grid"]
    with pytest.raises(KeyError, match=r"section 'pointing' lacks key\(s\) \['grid'\]"):
        build_settings([data], quick=False, arch="rn", where="demo.yaml")


def test_stage_arguments_are_the_yaml_values():
    """as_dict gives back what the YAML says (so stage markers of earlier runs still match)."""
    raw = yaml.safe_load(settings_path().read_text())
    s = load_settings(DemoConfig())
    assert as_dict(s.explain) == raw["explain"]
    assert s.pointing.game() == {k: v for k, v in raw["pointing"].items() if k != "target_margin"}
    assert as_dict(s.distill) == raw["distill"]


def test_threads_default_to_torchs_whatever_the_load_at_start(monkeypatch):
    """Issue 15: a moment's load at the start held a whole --quick run on 1 thread. The default is now
    torch's own (one per physical core), not a reading of how busy the cores are."""
    import builtins
    import os

    import torch

    before = torch.get_num_threads()
    real_open = builtins.open

    def all_busy(path, *a, **k):  # /proc/stat: every core busy, nothing idle
        if str(path) == "/proc/stat":
            import io

            return io.StringIO("cpu  1000000 0 1000000 0 0 0 0 0 0 0\n")
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", all_busy)
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    try:
        assert set_threads(None) == before
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_sets_passive_waiting_before_torch_loads():
    """OMP_WAIT_POLICY is read when torch loads its OpenMP runtime: the CLI sets it first, unless the user
    chose a policy."""
    import os
    import subprocess
    import sys

    code = ("import os, sys, bcos_clip.cli; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ACTIVE", "False"]


def test_quick_stays_short_for_every_arch():
    """--quick is applied over the arch sections: the ViT's teacher and distillation steps of the full demo
    must not leak into the smoke run (they did when arch was merged last)."""
    for arch in ("rn", "vit"):
        quick, full = (load_settings(DemoConfig(quick=q, arch=arch)) for q in (True, False))
        assert quick.teacher.steps is None  # the teacher pre-training's own quick length, not the ViT's 1200
        assert quick.distill["steps"] == 60
    vit_steps = yaml.safe_load(settings_path().read_text(encoding="utf-8"))["arch"]["vit"]["distill"]["steps"]
    assert load_settings(DemoConfig(quick=False, arch="vit")).distill["steps"] == vit_steps != 60
    assert load_settings(DemoConfig(quick=True, arch="vit")).distill["lr"] == 2e-3  # arch values still apply
