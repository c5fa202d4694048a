"""Config (YAML + flags), CLI parsing, learning-rate schedule, gradient clipping, checkpoint files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bcos_clip.cli import build_parser
from bcos_clip.train.checkpoint import find_resume, load_state, save_checkpoint
from bcos_clip.train.config import TrainConfig, build_config, load_config_json
from bcos_clip.train.optim import adaptive_clip_grad_, clip_gradients_, lr_at

REPO = Path(__file__).resolve().parents[1]


def _flags(argv):
    args = build_parser().parse_args(["train", *argv])
    from bcos_clip.train.config import FIELDS

    return {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}, getattr(args, "config", None)


def test_flags_override_yaml_and_unset_flags_keep_it(tmp_path):
    flags, config = _flags(["--config", str(REPO / "configs/cc3m_rn50.yaml"), "--steps", "7", "--lr", "3e-4",
                            "--out", str(tmp_path), "--dataset-resampled"])
    cfg = build_config(flags, config)
    assert (cfg.steps, cfg.epochs, cfg.lr, cfg.output) == (7, None, 3e-4, str(tmp_path))
    assert (cfg.model, cfg.loss, cfg.batch_size, cfg.agc_clip, cfg.wd) == ("RN50", "siglip", 64, 0.01, 0.0)
    assert cfg.dataset_resampled and not cfg.torchcompile
    cfg.save_json(tmp_path)
    assert load_config_json(tmp_path / "train_config.json") == cfg


@pytest.mark.parametrize("name", ["cc3m_rn50", "imagenet_rn50", "cc3m_vitb16"])
def test_shipped_configs_are_valid(name):
    cfg = build_config({}, str(REPO / "configs" / f"{name}.yaml"))
    assert cfg.model in ("RN50", "ViT-B-16") and cfg.epochs == 90 and cfg.lr == 1e-4


def test_bad_config_values_fail_clearly(tmp_path):
    base = dict(model="RN50", train_data="x.tar", output=str(tmp_path), steps=1)
    with pytest.raises(ValueError, match="--loss 'kl'"):
        TrainConfig(**{**base, "loss": "kl"})
    with pytest.raises(ValueError, match="exactly one of --epochs"):
        TrainConfig(**{**base, "epochs": 2})
    with pytest.raises(ValueError, match="--batch-size"):
        TrainConfig(**{**base, "batch_size": 0})
    (tmp_path / "bad.yaml").write_text("model: RN50\nlearning_rate: 0.1\n")
    with pytest.raises(KeyError, match="learning_rate"):
        build_config({}, str(tmp_path / "bad.yaml"))
    with pytest.raises(ValueError, match="--train-data"):
        build_config({"model": "RN50", "output": "o", "steps": 1})
    with pytest.raises(SystemExit):
        _flags(["--epochs", "1", "--steps", "2"])
    with pytest.raises(ValueError, match="--bcos-layernorm 'rms'"):
        TrainConfig(**{**base, "bcos_layernorm": "rms"})
    with pytest.raises(ValueError, match="--bcos-qk"):
        TrainConfig(**{**base, "bcos_qk": "plain"})


def test_bcos_conversion_flags_reach_the_config(tmp_path):
    flags, _ = _flags(["--model", "RN50", "--train-data", "x.tar", "--out", str(tmp_path), "--steps", "1",
                       "--bcos-qk", "linear", "--bcos-layernorm", "uncentered", "--bcos-positional-scale", "0.25"])
    cfg = build_config(flags)
    assert (cfg.bcos_qk, cfg.bcos_layernorm, cfg.bcos_positional_scale) == ("linear", "uncentered", 0.25)
    default = TrainConfig(model="m", train_data="d", output="o", steps=1)
    assert (default.bcos_qk, default.bcos_positional_scale, cfg.bcos_b) == ("bcos", 1.0, 2.0)
    with pytest.raises(ValueError, match="--bcos-positional-scale"):
        TrainConfig(model="m", train_data="d", output="o", steps=1, bcos_positional_scale=0.0)


def test_yaml_reads_exponent_numbers_as_floats(tmp_path):
    """PyYAML alone reads ``5e-4`` as a string (YAML 1.1); run configs read it as the float."""
    from bcos_clip.runtime.yaml_io import load_yaml

    assert load_yaml("a: 5e-4\nb: 1.0e-3\nc: 3\nd: .5\ne: 1e3x\nf: 2E+2") == \
        {"a": 5e-4, "b": 1e-3, "c": 3, "d": 0.5, "e": "1e3x", "f": 200.0}
    (tmp_path / "run.yaml").write_text("model: RN50\ntrain_data: x.tar\noutput: o\nsteps: 2\nlr: 5e-4\n")
    assert build_config({}, str(tmp_path / "run.yaml")).lr == 5e-4


def test_lr_schedule_warmup_then_cosine_to_zero():
    lrs = [lr_at(s, 1.0, total_steps=12, warmup=2) for s in range(12)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.03
    assert lr_at(5, 0.1, 10, schedule="const") == 0.1


def test_adaptive_gradient_clipping_matches_unitwise_formula():
    g = torch.Generator().manual_seed(0)
    w2 = torch.nn.Parameter(torch.randn(4, 3, 2, 2, generator=g))
    w1 = torch.nn.Parameter(torch.randn(5, generator=g) * 1e-5)  # tiny weights: eps takes over
    w2.grad = torch.randn(4, 3, 2, 2, generator=g) * torch.tensor([1e-4, 1.0, 1e-4, 5.0]).view(4, 1, 1, 1)
    w1.grad = torch.randn(5, generator=g)
    ref2, ref1 = w2.grad.double().clone(), w1.grad.double().clone()
    clip, eps = 0.01, 1e-3
    for r in range(4):
        wn = max(float(w2.data[r].double().norm()), eps)
        gn = float(ref2[r].norm())
        if gn > clip * wn:
            ref2[r] *= clip * wn / gn
    wn, gn = max(float(w1.data.double().norm()), eps), float(ref1.norm())
    ref1 *= clip * wn / gn if gn > clip * wn else 1.0
    adaptive_clip_grad_([w2, w1], clip, eps)
    assert torch.allclose(w2.grad.double(), ref2, rtol=1e-5) and torch.allclose(w1.grad.double(), ref1, rtol=1e-5)
    assert float(w2.grad[0].norm()) == pytest.approx(float(ref2[0].norm()))  # small rows untouched


def test_clip_gradients_reports_non_finite_norms():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    assert not torch.isfinite(clip_gradients_([p], 0.01, 1e-3, 1.0))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert float(clip_gradients_([p], 0.0, 1e-3, 1.0)) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)


def test_checkpoints_are_atomic_and_latest_follows(tmp_path):
    def writer(d):
        (Path(d) / "model.safetensors").write_bytes(b"w")
        (Path(d) / "config.json").write_text("{}")

    assert find_resume(str(tmp_path), "latest") is None  # nothing yet: fresh start
    for step in (2, 4, 6):
        save_checkpoint(str(tmp_path), step, writer, {"step": step}, json.dumps({}), keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000004", "step_00000006"]
    assert find_resume(str(tmp_path), "latest") == (root / "step_00000006").resolve()
    assert load_state(root / "latest")["step"] == 6
    assert sorted(p.name for p in (root / "latest").iterdir()) == [
        "config.json", "model.safetensors", "train_config.json", "train_state.json", "train_state.safetensors"]

    def broken(d):
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(str(tmp_path), 8, broken, {"step": 8}, "{}")
    assert find_resume(str(tmp_path), "latest") == (root / "step_00000006").resolve()
    with pytest.raises(FileNotFoundError, match="train_state.json"):
        find_resume(str(tmp_path), str(tmp_path))


def test_tensorboard_logging_or_a_clear_error(tmp_path):
    import importlib.util

    from bcos_clip.train.metrics import MetricsLogger

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(RuntimeError, match="pip install tensorboard"):
            MetricsLogger(str(tmp_path), True, "tensorboard")
        return
    logger = MetricsLogger(str(tmp_path), True, "tensorboard")
    logger.log({"step": 1, "loss": 0.5})
    logger.close()
    assert list((tmp_path / "tensorboard").glob("events.*"))


def test_cli_reports_bad_data_paths_in_one_line(tmp_path, capsys):
    from bcos_clip.cli import main

    code = main(["train", "--model", "RN50", "--train-data", str(tmp_path / "{00000..00003}.tar"),
                 "--steps", "1", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "4 of 4 shards" in err[0] and "do not exist" in err[0]


def test_default_precision_is_bf16_autocast_on_bf16_gpus_else_fp16_with_scaler(monkeypatch):
    import torch

    from bcos_clip.train.config import TrainConfig
    from bcos_clip.runtime.precision import resolve_precision

    assert TrainConfig(model="RN50", train_data="x.tar", output="out", steps=1).precision == "auto"
    cpu = resolve_precision("auto", torch.device("cpu"))
    assert cpu.autocast_dtype is None and not cpu.use_scaler
    for bf16, dtype, scaler in ((True, torch.bfloat16, False), (False, torch.float16, True)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, v=bf16: v)
        p = resolve_precision("auto", torch.device("cuda"))
        assert (p.autocast_dtype, p.use_scaler, p.name) == (dtype, scaler, "amp_bf16" if bf16 else "amp")
    explicit = resolve_precision("amp", torch.device("cuda"))
    assert explicit.autocast_dtype == torch.float16 and explicit.use_scaler
