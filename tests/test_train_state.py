"""The trainer state on disk (JSON + safetensors, no pickle) round-trips exactly: optimizer, scaler,
RNG states of python / numpy / torch, counters, plan; resuming from it continues every stream as if
uninterrupted. (End to end after SIGKILL: tests/test_train_distributed.py.)"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bcos_clip.train.checkpoint import load_state, restore_rng_states, rng_states, save_checkpoint
from bcos_clip.train.state_codec import StateFileError, read_state, write_state


def _optimizer_after_steps(kind, seed: int = 0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    opt = kind(params, lr=1e-2)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return params, opt


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_state_round_trip_resumes_exactly(tmp_path, kind):
    params, opt = _optimizer_after_steps(kind)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    state = {"optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rng_states(), "step": 3,
             "epoch": 0, "counters": {"skipped_steps": 1, "bad_data_corrupt_image": 2},
             "plan": {"steps_per_epoch": 7, "world_size": 1}, "schedule": {"name": "cosine", "total": 9}}
    expected_draws = _draws()
    write_state(tmp_path / "s.json", tmp_path / "s.safetensors", state)
    back = read_state(tmp_path / "s.json", tmp_path / "s.safetensors")
    assert back["counters"] == state["counters"] and back["plan"] == state["plan"] and back["step"] == 3
    assert back["scaler"] == state["scaler"]
    # RNG: the same draws after restoring
    restore_rng_states(back["rng"])
    assert _draws() == expected_draws
    # optimizer: identical state and identical next updates
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = kind(twin, lr=1e-2)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    grads = [torch.randn_like(p) for p in params]
    for p, q, g in zip(params, twin, grads):
        p.grad, q.grad = g.clone(), g.clone()
    opt.step(), opt2.step()
    assert all(torch.equal(p, q) for p, q in zip(params, twin))


def test_values_json_cannot_hold_round_trip(tmp_path):
    state = {"ints": {0: "a", 7: (1, 2.5)}, "nonfinite": [float("inf"), float("-inf")], "tuple": (None, True),
             "marker_like": {"__tensor__": "not a tensor"}, "u32": np.arange(3, dtype=np.uint32),
             "bf16": torch.ones(2, dtype=torch.bfloat16), "np_scalar": np.float32(0.25)}
    write_state(tmp_path / "s.json", tmp_path / "s.safetensors", state)
    json.loads((tmp_path / "s.json").read_text())  # strict JSON (no Infinity / NaN literals)
    assert "Infinity" not in (tmp_path / "s.json").read_text()
    back = read_state(tmp_path / "s.json", tmp_path / "s.safetensors")
    assert back["ints"] == {0: "a", 7: (1, 2.5)} and back["tuple"] == (None, True)
    assert back["nonfinite"] == [float("inf"), float("-inf")] and back["marker_like"] == {"__tensor__": "not a tensor"}
    assert back["u32"].dtype == np.uint32 and back["u32"].tolist() == [0, 1, 2]
    assert back["bf16"].dtype == torch.bfloat16 and back["np_scalar"] == 0.25


def test_state_that_is_not_data_is_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="cannot store a object"):
        write_state(tmp_path / "s.json", tmp_path / "s.safetensors", {"x": object()})


def test_checkpoint_holds_no_pickle_and_legacy_state_is_refused(tmp_path):
    def writer(d):
        (d / "model.safetensors").write_bytes(b"w")
        (d / "config.json").write_text("{}")

    final = save_checkpoint(str(tmp_path), 2, writer, {"step": 2, "rng": rng_states()}, "{}")
    assert not list(final.glob("*.pt")) and load_state(final)["step"] == 2
    (final / "train_state.json").unlink()
    torch.save({"step": 2}, final / "train_state.pt")
    with pytest.raises(StateFileError, match="pickled trainer state .* not loaded") as err:
        load_state(final)
    assert "\n" not in str(err.value) and f"--model {final}" in str(err.value)
    (final / "train_state.pt").unlink()
    with pytest.raises(FileNotFoundError, match="train_state.json"):
        load_state(final)
